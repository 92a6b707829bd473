"""Sinks: where events end up. One small interface, chosen by the config's `type`."""

from bridge.sinks.base import Delivery, Sink, SinkError

__all__ = ["Delivery", "Sink", "SinkError"]
