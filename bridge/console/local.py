"""What only the process serving the console knows: its health checks, loops and circuits.

Other replicas' loops are in the status report (read from Redis); these figures
are this replica's own, shown as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge import clock
from bridge.delivery import Circuit
from bridge.supervise import Loop

Checks = Callable[[], tuple[bool, dict[str, str]]]


@dataclass
class Local:
    """Hooks into the running daemon: its readiness and liveness, loops and sink circuits."""

    readiness: Checks
    liveness: Checks
    loops: Callable[[], dict[str, Loop]]
    circuits: Callable[[], dict[str, Circuit]]


def local_health(local: Local) -> dict[str, Any]:
    """This replica's checks, each loop's state and each sink's circuit, as the page shows them."""
    ready, checks = local.readiness()
    alive, dead = local.liveness()
    now = clock.monotonic()
    loops = []
    for name, loop in sorted(local.loops().items()):
        quiet = loop.quiet_for(now)
        loops.append(
            {
                "name": name,
                "state": "dead"
                if f"loop:{name}" in dead
                else "stalled"
                if f"loop:{name}" in checks
                else "finished"
                if loop.finished
                else "ok",
                "quiet_s": round(quiet, 1),
                "failures": loop.failures,
                "last_error": loop.last_error,
            }
        )
    circuits = {name: circuit_state(c, now) for name, c in local.circuits().items()}
    return {"ready": ready, "alive": alive, "checks": checks, "loops": loops, "circuits": circuits}


def circuit_state(circuit: Circuit, now: float) -> str:
    """closed, open (until its pause ends) or half-open (a probe may go or is out)."""
    if circuit.open_until is None:
        return "closed"
    if circuit.probing or now >= circuit.open_until:
        return "half-open"
    return "open"
