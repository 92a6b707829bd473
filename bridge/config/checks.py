"""Checks across sections: duplicate names, routes naming unknown sinks or feeds, ports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.config.errors import Problem


def _names(items: Any, section: str, problems: list[Problem]) -> list[str] | None:
    """The names in a section (None if it is not a list), noting duplicates."""
    if not isinstance(items, list):
        return None
    names: list[str] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            problems.append(
                ((section, i, "name"), f"duplicate name {name!r} ({section}[{first[name]}] too)")
            )
        else:
            first[name] = i
            names.append(name)
    return names


def _cross_references(data: Mapping[str, Any]) -> list[Problem]:
    """Problems between sections: duplicate names, routes naming unknown sinks or feeds."""
    problems: list[Problem] = []
    known = {
        "feeds": _names(data.get("feeds"), "feeds", problems),
        "sinks": _names(data.get("sinks"), "sinks", problems),
    }
    routes = data.get("routes")
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, dict):
            continue
        for key, what in (("sinks", "sink"), ("feeds", "feed")):
            names, have_names = route.get(key), known[key]
            if have_names is None or not isinstance(names, list):
                continue  # the section's own problem says what is wrong
            for name in names:
                if isinstance(name, str) and name not in have_names:
                    have = ", ".join(have_names) or "none"
                    problems.append(
                        (("routes", i, key), f"unknown {what} {name!r} ({key}: {have})")
                    )
    problems += _webhooks_port(data)
    return problems


def _webhooks_port(data: Mapping[str, Any]) -> list[Problem]:
    """The webhook listener must not share `http.listen`: only its own port is exposed."""
    absorb, http = data.get("absorb"), data.get("http")
    webhooks = absorb.get("webhooks") if isinstance(absorb, dict) else None
    if not isinstance(webhooks, dict):
        return []
    listen = webhooks.get("listen", "0.0.0.0:8088")
    http_listen = (http if isinstance(http, dict) else {}).get("listen", "127.0.0.1:9464")
    if not isinstance(listen, str) or not isinstance(http_listen, str):
        return []
    port, http_port = listen.rpartition(":")[2], http_listen.rpartition(":")[2]
    if port == http_port and port != "0":
        return [
            (
                ("absorb", "webhooks", "listen"),
                f"port {port} is http.listen's too: the webhook listener needs a port of its "
                "own, the only one to expose to Absorb",
            )
        ]
    return []
