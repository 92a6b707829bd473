"""The faults the simulator can play, switchable at start and while it runs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Faults(BaseModel):
    """What goes wrong, and how often. Shares are probabilities between 0 and 1."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: Absorb's throttle: requests a second and burst; beyond them, 429.
    rate_limit_per_s: float | None = Field(default=200.0, gt=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    #: `Retry-After` seconds sent with a 429; None sends none (Absorb documents none).
    retry_after_s: float | None = Field(default=None, ge=0)
    #: Share of API replies that are a server error instead, drawn from `error_statuses`.
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_statuses: list[int] = Field(default_factory=lambda: [500, 503], min_length=1)
    #: Added to every API reply.
    latency_ms: float = Field(default=0.0, ge=0)
    #: Share of 2xx JSON replies that arrive cut off or otherwise not JSON.
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    #: Records of the listed scope edited just before each page is served, which moves them
    #: to the end of a `dateEdited` sort and shifts the pages under a reader.
    mutate_while_paging: int = Field(default=0, ge=0)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings from the command line into a dict for `Faults.model_validate`."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--fault {item!r}: expected KEY=VALUE, e.g. error_rate=0.1")
        pairs[key.strip().replace("-", "_")] = value.strip()
    return pairs
