"""A sink's `personal_data`: named fields of `data.current` and `data.previous` dropped or
hashed, on the way to a real receiver and in `test-sink`, and refused when ill-formed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from bridge import clock, samples
from bridge.config import HttpSinkConfig, PersonalDataConfig
from bridge.personal_data import PersonalData, scrub
from bridge.sinks.http import HttpSink
from tests.engine import put_events, settle_worker, sink_worker
from tests.receivers import Receiver

SECRET = "whsec_" + base64.b64encode(b"personal-data-signing-key").decode()


def _event() -> dict[str, object]:
    return samples.status_changed("https://rest.myabsorb.com", clock.now())


def test_dropped_fields_are_gone_and_hashed_ones_match_without_showing() -> None:
    """Dropped fields leave current (and previous, where named); hashed ones become a keyed
    hash, the same for the same value, different with another key; the rest is untouched
    and the original event is not changed."""
    event = _event()
    original = repr(event)
    policy = PersonalData(frozenset({"fullName", "score"}), frozenset({"userId"}), b"k1")
    out = scrub(event, policy)
    current, previous = out["data"]["current"], out["data"]["previous"]  # type: ignore[index]
    assert "fullName" not in current
    assert "score" not in current
    assert "score" not in previous
    assert current["userId"].startswith("hmac-sha256:")
    assert samples.SAMPLE_USER_ID not in repr(out)
    assert "Test Learner" not in repr(out)
    assert current["courseName"] == "absorb-bridge test course"
    assert out["id"] == event["id"]
    assert repr(event) == original
    again = scrub(_event(), policy)["data"]["current"]["userId"]  # type: ignore[index]
    assert again == current["userId"]
    other = scrub(_event(), PersonalData(hash=frozenset({"userId"}), hash_key=b"k2"))
    assert other["data"]["current"]["userId"] != current["userId"]  # type: ignore[index]
    plain = scrub(_event(), PersonalData(hash=frozenset({"userId", "dateExpires"})))
    assert plain["data"]["current"]["userId"].startswith("sha256:")  # type: ignore[index]
    assert plain["data"]["current"]["dateExpires"] is None  # type: ignore[index]


def test_a_policy_without_fields_or_with_a_field_twice_is_refused() -> None:
    """Neither drop nor hash, or one field in both, is a config error naming the field."""
    with pytest.raises(ValidationError, match="name the fields"):
        PersonalDataConfig.model_validate({})
    with pytest.raises(ValidationError, match="fullName: either dropped or hashed"):
        PersonalDataConfig.model_validate({"drop": ["fullName"], "hash": ["fullName"]})


async def test_a_receiver_gets_events_without_the_personal_fields(
    redis: aioredis.Redis,
) -> None:
    """Through the real delivery worker: the receiver's signed events lack the dropped
    fields and carry hashes for the hashed ones; the ids are the events' own."""
    from bridge.commands.wiring import personal_data

    receiver = Receiver([SECRET])
    url = await receiver.start()
    config = HttpSinkConfig.model_validate(
        {
            "name": "audit",
            "type": "http",
            "url": url,
            "secret": SECRET,
            "personal_data": {"drop": ["fullName", "jobTitle"], "hash": ["userId"]},
        }
    )
    sink = HttpSink(config)
    worker, store = await sink_worker(redis, sink, "pii", personal_data=personal_data(config))
    events = [samples.status_changed("https://rest.myabsorb.com", clock.now())]
    try:
        await put_events(store, events)
        await settle_worker(worker, lambda: len(receiver.accepted) == 1)
    finally:
        await sink.close()
        await receiver.stop()
    assert receiver.problems == []
    (got,) = receiver.accepted
    assert got["id"] == events[0]["id"]
    current = got["data"]["current"]
    assert "fullName" not in current
    assert "jobTitle" not in current
    assert current["userId"].startswith("sha256:")
    assert b"Test Learner" not in receiver.bodies[0]


async def test_test_sink_sends_what_the_sink_would(tmp_path: Path) -> None:
    """`test-sink` applies the sink's personal_data too: the sample reaches the file
    without the learner's name."""
    from tests.test_commands import _cli

    out_file = tmp_path / "audit.jsonl"
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""
absorb: {{base_url: "http://127.0.0.1:9", api_key: k, username: u, password: p}}
feeds: [{{name: courses, resource: course_enrollments}}]
sinks:
  - name: audit
    type: file
    path: {out_file}
    personal_data: {{drop: [fullName], hash: [userId], hash_key_file: {tmp_path / "key"}}}
routes: [{{sinks: [audit]}}]
"""
    )
    (tmp_path / "key").write_text("a-key-for-tests\n")
    out, _ = await _cli("test-sink", "--config", str(config), "--sink", "audit")
    assert f"appended to {out_file}" in out
    text = out_file.read_text()
    assert "Test Learner" not in text
    assert '"userId":"hmac-sha256:' in text
