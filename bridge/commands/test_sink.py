"""`absorb-bridge test-sink --sink NAME`: one sample event through a sink, and its answer."""

from __future__ import annotations

import asyncio

from bridge import clock, samples
from bridge.commands.wiring import build_sink, load, personal_data, sink_named
from bridge.config import Config
from bridge.personal_data import PersonalData
from bridge.sinks.base import Sink, SinkError


def test_sink(path_arg: str | None, name: str) -> int:
    """Deliver a sample event the way real events go (signing, templates, headers).

    Prints what the sink answered and how long it took; exit 1 when it did not
    take the event. Needs no Redis unless the sink is a Redis stream.
    """
    config = load("test-sink", path_arg)
    if isinstance(config, int):
        return config
    sink_config = sink_named("test-sink", config, name)
    if sink_config is None:
        return 1
    policy = personal_data(sink_config) or PersonalData()
    return asyncio.run(_send(build_sink(sink_config, config), config, policy))


async def _send(sink: Sink, config: Config, policy: PersonalData) -> int:
    feed = config.feeds[0].name
    delivery = samples.delivery(config.absorb.base_url, clock.now(), feed, policy)
    started = clock.monotonic()
    try:
        await sink.start()
        await sink.send(delivery)
    except SinkError as e:
        took = clock.monotonic() - started
        print(f"test-sink {sink.name}: NOT delivered after {took * 1000:.0f} ms: {e}")
        if reply := _reply(sink):
            print(f"  answer: {reply}")
        return 1
    finally:
        await sink.close()
    took = clock.monotonic() - started
    print(f"test-sink {sink.name}: delivered in {took * 1000:.0f} ms: {_reply(sink) or 'taken'}")
    print(f"  event {delivery.id} ({delivery.event['type']}, subject {delivery.event['subject']})")
    return 0


def _reply(sink: Sink) -> str:
    return str(getattr(sink, "last_reply", ""))
