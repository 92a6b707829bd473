"""The operator's web console, served on `http.listen` when `console.enabled`."""

from bridge.console.app import Console, console_app
from bridge.console.local import Local

__all__ = ["Console", "Local", "console_app"]
