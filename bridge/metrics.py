"""Every Prometheus metric the bridge exports, in one registry."""

from __future__ import annotations

import platform

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bridge import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
# The process's CPU, memory and file descriptors, Python's garbage collector and version.
for _collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
    REGISTRY.register(_collector)


def _counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
    return Counter(f"absorb_bridge_{name}", doc, labels, registry=REGISTRY)


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(f"absorb_bridge_{name}", doc, labels, registry=REGISTRY)


SWEEPS = _counter("sweeps", "Scope sweeps by outcome (ok, failed, fenced).", ("feed", "outcome"))
SWEEP_DURATION = Histogram(
    "absorb_bridge_sweep_duration_seconds",
    "How long one scope's sweep took.",
    ("feed",),
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
RECORDS_READ = _counter("records_read", "Records read from Absorb by sweeps.", ("feed",))
EVENTS_EMITTED = _counter("events_emitted", "Events appended to the outbox.", ("feed", "type"))
WATERMARK_LAG = _gauge(
    "watermark_lag_seconds", "Now minus the oldest scope watermark of a feed.", ("feed",)
)
QUARANTINED = _gauge("quarantined", "Records held in quarantine.", ("feed",))
SCOPE_AGE = _gauge(
    "scope_age_seconds",
    "Time since the start of the last sweep of a feed's scopes (quantile: 0.5, 0.99, 1).",
    ("feed", "quantile"),
)
KEEPABLE_INTERVAL = _gauge(
    "keepable_interval_seconds",
    "The interval the request budget can keep for a feed's scopes (above interval: a shortfall).",
    ("feed",),
)
LEASES_HELD = _gauge("leases_held", "Scopes this replica is sweeping right now.", ("feed",))

ABSORB_REQUESTS = _counter(
    "absorb_requests", "Requests to Absorb by endpoint template and status.", ("endpoint", "status")
)
ABSORB_RETRIES = _counter("absorb_retries", "Absorb requests tried again, by reason.", ("reason",))

OUTBOX_LENGTH = _gauge("outbox_length", "Entries in the outbox stream.")
SINK_BACKLOG = _gauge("sink_backlog", "Events not yet delivered to a sink.", ("sink",))
SINK_IN_FLIGHT = _gauge("sink_in_flight", "Deliveries under way to a sink.", ("sink",))
SINK_RETRYING = _gauge("sink_retrying", "Events waiting for another try.", ("sink",))
SINK_DEAD_LETTERS = _gauge("sink_dead_letters", "Dead-lettered events of a sink.", ("sink",))
SINK_CIRCUIT_OPEN = _gauge("sink_circuit_open", "1 while a sink's circuit is open.", ("sink",))
SINK_DISABLED = _gauge("sink_disabled", "1 while a sink is disabled (HTTP 410).", ("sink",))
DELIVERY_ATTEMPTS = _counter(
    "delivery_attempts",
    "Delivery tries by outcome (delivered, retry, dead_lettered, gone).",
    ("sink", "outcome"),
)
DELIVERY_LATENCY = Histogram(
    "absorb_bridge_delivery_latency_seconds",
    "From the event entering the outbox to the sink confirming it.",
    ("sink",),
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000),
    registry=REGISTRY,
)
READY = _gauge("ready", "1 when Redis is reachable, Absorb answers and no loop is stalled.")

LOOP_ERRORS = _counter("loop_errors", "Exceptions a loop caught and survived, by loop.", ("loop",))
LOOP_LAST_CYCLE = _gauge(
    "loop_last_cycle_timestamp_seconds", "When a loop last completed a cycle (Unix).", ("loop",)
)
REDIS_DATA_LOST = _counter(
    "redis_data_lost", "Times Redis was found to have lost the bridge's data while it ran.", ()
)


BUILD_INFO = _gauge(
    "build_info", "Always 1; the labels say which bridge runs.", ("version", "python_version")
)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)


def render() -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(REGISTRY)


UNKNOWN_STATUSES = _counter(
    "unknown_statuses",
    "Records read with a status outside Absorb's documented enum, by feed and number.",
    ("feed", "status"),
)
QUARANTINED_RECORDS = _counter(
    "quarantined_records",
    "Records (and drill-downs) put in quarantine, by feed and category.",
    ("feed", "category"),
)
SINK_EXCEPTIONS = _counter(
    "sink_exceptions",
    "Delivery tries that ended in an exception other than a SinkError (a bug, a template).",
    ("sink", "error"),
)
DEAD_LETTERS_DROPPED = _counter(
    "dead_letters_dropped", "Oldest dead letters dropped to keep a sink within its cap.", ("sink",)
)
QUARANTINE_DROPPED = _counter(
    "quarantine_dropped",
    "Oldest quarantined records dropped to keep a feed within its cap.",
    ("feed",),
)
SINK_GROUPS_DROPPED = _counter(
    "stale_sink_groups_dropped",
    "Outbox consumer groups dropped because no replica fed their sink within the grace period.",
    ("sink",),
)
NOTICES = _counter(
    "notices",
    "Absorb webhook notices by outcome (received, refused, used, unusable, failed);"
    " reason says why one was refused (signature, too_large, not_json, busy).",
    ("outcome", "reason"),
)
NOTICE_HINTS = _counter(
    "notice_hints",
    "Scopes hinted by notices, by feed and whether a waiting hint took it.",
    ("feed", "result"),
)
