"""xAPI statements from events: the pure mapping behind the `xapi` sink.

`verbs` holds the documented table, `statements` builds validated statement models
from a CloudEvent, `ids` makes the deterministic UUIDs and `timespan` turns Absorb's
.NET TimeSpans into ISO 8601 durations. No I/O here: `bridge.sinks.xapi` sends them.
"""

from bridge.xapi.statements import MappingError, Portal, statements_for

__all__ = ["MappingError", "Portal", "statements_for"]
