"""Turning the console's data into HTML: Jinja2 with escaping on and secrets masked.

Every value a template prints passes `finalize`, which masks each configured secret
and the credentials of any URL, so a secret that reaches an error text from
outside (a receiver echoing a header, a URL in an exception) still never shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from bridge.redaction import mask, mask_url


def environment(secrets: Iterable[str]) -> Environment:
    """The templates of `bridge/console/templates`, escaping on, secrets masked."""
    # As in the logs: a secret under 4 characters would mask half of every word instead.
    hidden = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def finalize(value: Any) -> Any:
        if isinstance(value, Markup) or not isinstance(value, str):
            return value
        return mask_url(mask(value, hidden))

    env = Environment(
        loader=PackageLoader("bridge.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["age"] = age
    env.filters["mask"] = finalize
    return env


def when(value: Any) -> Markup:
    """A moment as `<time>`: ISO UTC in the page, shown in the browser's zone by its script.

    Takes RFC 3339 text or Unix seconds; anything else is shown as it is.
    """
    if value is None or value == "":
        return Markup("-")
    text = str(value)
    try:
        moment = datetime.fromtimestamp(float(text), UTC)
        text = moment.isoformat().replace("+00:00", "Z")
    except ValueError:
        pass
    return Markup('<time datetime="{0}">{0}</time>').format(text)


def age(seconds: Any) -> str:
    """Seconds as a short age (`45s`, `12m`, `3.5h`); `-` when unknown."""
    if seconds is None:
        return "-"
    value = float(seconds)
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"
