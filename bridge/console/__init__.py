"""The operator's web console, served on `http.listen` when `console.enabled`."""

from bridge.console.access import Console
from bridge.console.app import console_app
from bridge.console.local import Local

__all__ = ["Console", "Local", "console_app"]
