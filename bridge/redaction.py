"""Keeping secrets out of everything a person or a log can read."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """Return `text` with every occurrence of each non-empty secret replaced by `***`."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def excerpt(text: str, secrets: Iterable[str | None], limit: int = 200) -> str:
    """A short, masked, single-line excerpt of a body for error messages."""
    flat = " ".join(mask(text, secrets).split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
