"""Sinks: where events end up. One small interface, chosen by the config's `type`."""

from bridge.sinks.base import Sink, SinkError

__all__ = ["Sink", "SinkError"]
