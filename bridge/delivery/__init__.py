"""Delivery: outbox to routes to sinks, at least once and in order per subject."""

from bridge.delivery.policy import DEFAULT_SCHEDULE_S, Circuit, next_delay_s
from bridge.delivery.queue import DeadLetter, DeliveryQueue, Queued
from bridge.delivery.worker import SinkWorker, outbox_lag

__all__ = [
    "DEFAULT_SCHEDULE_S",
    "Circuit",
    "DeadLetter",
    "DeliveryQueue",
    "Queued",
    "SinkWorker",
    "next_delay_s",
    "outbox_lag",
]
