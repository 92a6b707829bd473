"""Building the bridge's parts from the config: the one place that turns settings into objects."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from pydantic import BaseModel, SecretStr

from bridge import keys, logs
from bridge.absorb.client import AbsorbClient
from bridge.absorb.token_cache import RedisTokenCache
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.config import (
    AmqpSinkConfig,
    Config,
    ConfigError,
    FeedConfig,
    FileSinkConfig,
    HttpSinkConfig,
    NatsSinkConfig,
    RedisStreamSinkConfig,
    SinkConfig,
    SlackSinkConfig,
    SqsSinkConfig,
    StdoutSinkConfig,
    XapiSinkConfig,
    config_path,
    load_config,
)
from bridge.delivery.policy import DEFAULT_SCHEDULE_S
from bridge.feeds import FeedSpec
from bridge.personal_data import PersonalData
from bridge.ratelimit import SharedRateLimiter
from bridge.routes import Route
from bridge.service import DeliveryOptions
from bridge.sinks.base import Sink
from bridge.sinks.file import FileSink
from bridge.sinks.http import HttpSink
from bridge.sinks.stdout import StdoutSink
from bridge.store import Store

#: The longest a Redis call may take; no call of the bridge blocks server-side.
_REDIS_TIMEOUT_S = 60.0


def load(prog: str, path_arg: str | None, env: Mapping[str, str] | None = None) -> Config | int:
    """The config, or an exit code after printing every problem (1) or the usage error (2)."""
    env = os.environ if env is None else env
    try:
        path = config_path(path_arg, env)
    except ConfigError as e:
        print(f"absorb-bridge {prog}: {e}", file=sys.stderr)
        return 2
    try:
        config, warnings = load_config(path, env)
    except ConfigError as e:
        count = len(e.problems)
        print(
            f"absorb-bridge {prog}: {count} problem{'' if count == 1 else 's'} in {path}:",
            file=sys.stderr,
        )
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    logs.register_secrets(config_secrets(config))
    return config


def sink_named(prog: str, config: Config, name: str) -> SinkConfig | None:
    """The sink called `name`, or None after saying which sinks there are."""
    try:
        return config.sink(name)
    except KeyError:
        names = ", ".join(s.name for s in config.sinks) or "none"
        print(f"absorb-bridge {prog}: no sink '{name}' in the config (sinks: {names})")
        return None


def config_secrets(value: object) -> list[str]:
    """Every secret a config holds: SecretStr values and passwords inside URLs."""
    found: list[str] = []
    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found += config_secrets(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            found += config_secrets(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += config_secrets(item)
    elif isinstance(value, str) and "://" in value:
        password = urlsplit(value).password
        if password:
            found.append(password)
    return found


def feed_spec(feed: FeedConfig) -> FeedSpec:
    """A feed of the config in the engine's terms."""
    return FeedSpec(
        name=feed.name,
        resource=feed.resource,
        course_ids=tuple(feed.course_ids) if feed.course_ids is not None else None,
        lessons=tuple((s.course_id, s.lesson_id) for s in feed.lessons or ()),
        sessions=tuple((s.course_id, s.session_id) for s in feed.sessions or ()),
        user_ids=tuple(feed.user_ids or ()),
        interval_s=feed.interval_s,
        max_interval_s=feed.max_interval_s,
        lookback_s=feed.lookback_s,
        emit_on_first_sync=feed.first_sync == "emit",
        details=frozenset(feed.details),
        progress_events=feed.progress_events,
        reconcile_every_s=feed.reconcile_every_s,
    )


def routes(config: Config) -> list[Route]:
    """The routes of the config."""

    def some(values: list[str] | None) -> frozenset[str] | None:
        return None if values is None else frozenset(values)

    return [
        Route(
            sinks=tuple(r.sinks),
            types=some(r.types),
            statuses=some(r.statuses),
            previous_statuses=some(r.previous_statuses),
            course_ids=some(r.course_ids),
            feeds=some(r.feeds),
        )
        for r in config.routes
    ]


def build_sink(sink: SinkConfig, config: Config) -> Sink:
    """The sink a config entry describes (optional dependencies are imported when started)."""
    if isinstance(sink, FileSinkConfig):
        return FileSink(sink.name, sink.path, fsync=sink.fsync)
    if isinstance(sink, StdoutSinkConfig):
        return StdoutSink(sink.name, pretty=sink.format == "pretty")
    if isinstance(sink, HttpSinkConfig):
        return HttpSink(sink)
    if isinstance(sink, SlackSinkConfig):
        from bridge.sinks.slack import SlackSink

        return SlackSink(sink)
    if isinstance(sink, RedisStreamSinkConfig):
        from bridge.sinks.redis_stream import RedisStreamSink

        return RedisStreamSink(sink, config.redis.url)
    if isinstance(sink, NatsSinkConfig):
        from bridge.sinks.nats import NatsSink

        return NatsSink(sink)
    if isinstance(sink, AmqpSinkConfig):
        from bridge.sinks.amqp import AmqpSink

        return AmqpSink(sink)
    if isinstance(sink, SqsSinkConfig):
        from bridge.sinks.sqs import SqsSink

        return SqsSink(sink)
    if isinstance(sink, XapiSinkConfig):
        from bridge.sinks.xapi import XapiSink

        return XapiSink(sink)
    raise ConfigError([f"sink '{sink.name}': unknown type"])  # pragma: no cover


def delivery_options(config: Config) -> dict[str, DeliveryOptions]:
    """Per sink: its retry schedule, concurrency, rate limit and dead-letter cap."""
    options: dict[str, DeliveryOptions] = {}
    for sink in config.sinks:
        schedule = getattr(sink, "retry_schedule_s", None)
        options[sink.name] = DeliveryOptions(
            schedule_s=tuple(schedule) if schedule else DEFAULT_SCHEDULE_S,
            max_in_flight=getattr(sink, "max_in_flight", 8),
            rate_limit_per_s=getattr(sink, "rate_limit_per_s", None),
            max_dead_letters=sink.max_dead_letters,
            personal_data=personal_data(sink),
        )
    return options


def personal_data(sink: SinkConfig) -> PersonalData | None:
    """What the sink drops or hashes of `data.current`, `.previous`, `.parent`, if any."""
    option = sink.personal_data
    if option is None:
        return None
    key = option.hash_key.get_secret_value().encode() if option.hash_key else None
    return PersonalData(frozenset(option.drop), frozenset(option.hash), key)


@dataclass
class Parts:
    """The connections every command shares."""

    redis: aioredis.Redis
    client: AbsorbClient
    store: Store


@asynccontextmanager
async def connect(config: Config) -> AsyncIterator[Parts]:
    """Redis, the Absorb client (sharing its token through Redis) and the store; closed on exit."""
    # A call on a connection that went silent fails after a while instead of wedging its loop.
    redis = aioredis.Redis.from_url(
        config.redis.url, socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=10.0
    )
    absorb = config.absorb
    cache = RedisTokenCache(
        redis, prefix=config.redis.prefix, base_url=absorb.base_url, username=absorb.username
    )
    transport = AbsorbTransport(
        absorb.base_url,
        Credentials(
            api_key=absorb.api_key.get_secret_value(),
            username=absorb.username,
            password=absorb.password.get_secret_value(),
        ),
        token_cache=cache,
        max_requests_per_second=absorb.max_requests_per_second,
        limiter=SharedRateLimiter(
            redis,
            keys.absorb_budget(config.redis.prefix, absorb.base_url),
            absorb.max_requests_per_second,
        ),
        timeout_s=absorb.timeout_s,
    )
    client = AbsorbClient(transport, page_size=absorb.page_size)
    try:
        store = Store(
            redis,
            config.redis.prefix,
            max_quarantined=config.redis.max_quarantined,
            removed_sink_grace_s=config.redis.removed_sink_grace_s,
            keep_recent=config.redis.recent_events,
        )
        yield Parts(redis, client, store)
    finally:
        await client.close()
        await redis.aclose()
