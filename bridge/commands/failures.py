"""The one line a command prints when Redis, Absorb, a sink or its own address is out of reach."""

from __future__ import annotations

import errno

from redis.exceptions import RedisError

from bridge import logs
from bridge.errors import AbsorbAuthError, AbsorbError


def explain(error: BaseException, command: str) -> str:
    """What went wrong in `command` and what to look at, in one line, every secret masked."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, RedisError):
        line = f"cannot reach Redis ({text}); check redis.url and that Redis is running"
    elif isinstance(error, AbsorbAuthError):
        line = f"Absorb refused the credentials ({text}); check absorb.api_key, username, password"
    elif isinstance(error, AbsorbError):
        line = f"cannot reach Absorb ({text}); check absorb.base_url and the network"
    elif isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        hint = ADDRESS_HINT if command == "run" else "choose another --host or --port"
        line = f"address already in use ({text}); {hint}"
    else:
        line = text
    return logs.masked_text(line)


#: How to run a second process on a host whose address is taken.
ADDRESS_HINT = (
    "stop what holds it, or give this process its own with ABSORB_BRIDGE_HTTP_LISTEN=HOST:PORT"
)
