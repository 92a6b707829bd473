"""Retry schedule and circuit breaker: pure rules, tested without a clock."""

from __future__ import annotations

import random

import pytest

from bridge.delivery.policy import DEFAULT_SCHEDULE_S, JITTER, Circuit, next_delay_s


def test_the_default_schedule_is_standard_webhooks_advice() -> None:
    """At once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight tries in all."""
    assert DEFAULT_SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize("attempts", range(8))
def test_delays_follow_the_schedule_with_jitter(attempts: int) -> None:
    """Each delay stays within the jitter band around its scheduled value."""
    rng = random.Random(attempts)
    for _ in range(200):
        delay = next_delay_s(attempts, DEFAULT_SCHEDULE_S, rng=rng)
        assert delay is not None
        planned = DEFAULT_SCHEDULE_S[attempts]
        assert planned * (1 - JITTER) <= delay <= planned * (1 + JITTER)


def test_the_schedule_runs_out() -> None:
    """After the last scheduled try there is no next one: the event is dead-lettered."""
    assert next_delay_s(len(DEFAULT_SCHEDULE_S), DEFAULT_SCHEDULE_S) is None


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    """A longer Retry-After replaces the planned delay, a shorter one does not; 6 h at most."""
    rng = random.Random(1)
    assert next_delay_s(1, (0, 5), retry_after_s=60, rng=rng) == 60
    shorter = next_delay_s(1, (0, 5), retry_after_s=1, rng=rng)
    assert shorter is not None
    assert shorter >= 4.5
    assert next_delay_s(1, (0, 5), retry_after_s=10**9, rng=rng) == 6 * 3600


def test_circuit_opens_after_the_threshold_and_probes_once() -> None:
    """Five failures open it; after the pause exactly one probe goes; success closes it."""
    circuit = Circuit(threshold=5, cooldown_s=10)
    for n in range(4):
        circuit.failed(now=n)
        assert circuit.allows(now=n)
    circuit.failed(now=4)
    assert not circuit.allows(now=5)
    assert circuit.allows(now=14.5)  # the probe
    assert not circuit.allows(now=14.6)  # only one probe at a time
    circuit.succeeded()
    assert circuit.allows(now=15)
    assert not circuit.is_open


def test_a_failed_probe_reopens_for_longer() -> None:
    """Each failed probe doubles the pause, up to the maximum."""
    circuit = Circuit(threshold=1, cooldown_s=10, max_cooldown_s=25)
    circuit.failed(now=0)
    assert circuit.open_until == 10
    assert circuit.allows(now=10)
    circuit.failed(now=10)
    assert circuit.open_until == 30
    assert circuit.allows(now=30)
    circuit.failed(now=30)
    assert circuit.open_until == 55  # capped at 25 s


def test_a_probe_whose_outcome_was_lost_is_given_up() -> None:
    """A probe that never reports back does not keep the circuit shut for ever."""
    circuit = Circuit(threshold=1, cooldown_s=10, probe_timeout_s=60)
    circuit.failed(now=0)
    assert circuit.allows(now=10)  # the probe goes, and its outcome is lost
    assert not circuit.allows(now=30)
    assert circuit.allows(now=71)  # given up: another probe
    circuit.abandon_probe()
    assert circuit.allows(now=72)


def test_a_batch_of_failures_opens_the_circuit_once() -> None:
    """Many tries failing together open the circuit for the base pause, not a longer one."""
    circuit = Circuit(threshold=5, cooldown_s=15)
    for _ in range(32):
        circuit.failed(now=100)
    assert circuit.open_until == 115
