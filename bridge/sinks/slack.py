"""The `slack` sink: a message per event to a Slack incoming webhook.

By default the message is Block Kit built here: a line such as
":white_check_mark: *Ada Lovelace* completed *First Aid* (score 92)" with the
event's time and kind beneath it. A Jinja2 template renders the whole JSON
payload instead when `templates` names one for the event. The first of these
keys present is used:

1. the new status, e.g. `Complete`;
2. the change, e.g. `status_changed` (`created`, `progress_changed`, `removed`);
3. `default`.

A template sees `event` (the CloudEvent), `learner`, `course`, `score` (None when
there is none), `change`, `status`, `previous_status` and `summary` (the default
line); undefined names are errors, and `tojson` quotes a value for JSON. Templates
run in Jinja2's sandbox, and an error while rendering is a failed try naming the
file and the line. When the rendered payload has no `text`, the default line is
added: Slack shows it in notifications.

Slack takes about one message a second per webhook and answers 429 beyond it:
the daemon paces the sink at `rate_limit_per_s` (1 by default) and a 429's
`Retry-After` postpones the event. The webhook URL is a credential: it never
appears in errors or logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bridge import clock
from bridge.absorb.timefmt import parse_datetime
from bridge.config import SlackSinkConfig
from bridge.redaction import excerpt, mask
from bridge.retry import parse_retry_after
from bridge.sinks import templates
from bridge.sinks.base import Delivery, SinkError, answered, redirected
from bridge.sinks.session import http_session

TIMEOUT_S = 15.0
#: How long a 429 without `Retry-After` postpones the event: Slack's one message a second.
DEFAULT_RETRY_AFTER_S = 1.0
#: Slack's answers that mean the webhook (or its channel or workspace) is gone for good.
DEAD_WEBHOOK = frozenset(
    {
        "no_service",
        "no_team",
        "team_disabled",
        "invalid_token",
        "channel_not_found",
        "channel_is_archived",
        "no_active_hooks",
    }
)


class SlackSink:
    """Posts each event to the webhook; 200 is delivered, a dead webhook disables the sink."""

    def __init__(
        self, config: SlackSinkConfig, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.name = config.name
        self.last_reply = ""
        self.config = config
        self._url = config.webhook_url.get_secret_value()
        self._secrets = [self._url, urlsplit(self._url).path]
        self._session = session
        self._owns_session = session is None
        self._templates: dict[str, templates.BodyTemplate] | None = None

    async def start(self) -> None:
        """Open the HTTP session and load the templates, if any."""
        if self._session is None:
            self._session = http_session()
        if self.config.templates and self._templates is None:
            self._templates = _load_templates(self.name, self.config.templates)

    async def close(self) -> None:
        """Close the session if the sink opened it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def payload(self, event: dict[str, Any]) -> dict[str, Any]:
        """The message for an event: from its template when one applies, else the default."""
        facts = _facts(event)
        template = _pick(self._templates or {}, facts)
        if template is None:
            return default_message(event)
        return _render(self.name, template, event, facts)

    async def send(self, delivery: Delivery) -> None:
        """Post the message; raise SinkError unless Slack answered 200."""
        if self._session is None or (self.config.templates and self._templates is None):
            await self.start()
        assert self._session is not None
        body = json.dumps(self.payload(delivery.event), ensure_ascii=False).encode()
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        headers = {"Content-Type": "application/json"}
        try:
            # Never followed: the message goes to the configured webhook or nowhere.
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as reply:
                status = reply.status
                retry_after = reply.headers.get("Retry-After")
                location = reply.headers.get("Location")
                answer = (await reply.read()).decode("utf-8", "replace").strip()
        except TimeoutError:
            raise SinkError(self.name, f"Slack did not answer within {TIMEOUT_S:g}s") from None
        except aiohttp.ClientError as e:
            # Not chained: aiohttp's errors may carry the URL, which is a credential.
            reason = mask(f"{type(e).__name__}: {e}", self._secrets)
            raise SinkError(self.name, f"cannot reach Slack: {reason}") from None
        self.last_reply = answered(status, answer.encode(), self._secrets)
        if status == 200:
            return
        if 300 <= status < 400:
            raise SinkError(self.name, redirected(status, location, self._secrets))
        said = excerpt(answer, self._secrets)
        if status == 429:
            wait = parse_retry_after(retry_after, clock.now())
            raise SinkError(
                self.name,
                f"Slack is rate limiting the webhook (HTTP 429 {said})",
                retry_after_s=DEFAULT_RETRY_AFTER_S if wait is None else wait,
            )
        if status == 410 or (400 <= status < 500 and answer in DEAD_WEBHOOK):
            raise SinkError(
                self.name,
                f"Slack says the webhook is gone (HTTP {status} {said}): "
                "create a new incoming webhook and put its URL in webhook_url",
                gone=True,
            )
        raise SinkError(self.name, f"Slack answered HTTP {status}" + (f": {said}" if said else ""))


def default_message(event: dict[str, Any]) -> dict[str, Any]:
    """The Block Kit message for an event: its summary line, then when and what kind."""
    line = _facts(event)["summary"]
    kind = str(event.get("type", "")).split(".")
    context = " · ".join(
        part
        for part in (_when(event.get("time")), kind[1].replace("_", " ") if len(kind) > 2 else "")
        if part
    )
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": line}}]
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": line, "blocks": blocks}


def _facts(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    current: dict[str, Any] = data.get("current") or {}
    # An attempt record names no learner; the drill-down put its learner in `data.parent`.
    parent: dict[str, Any] = data.get("parent") or {}
    named = " ".join(str(current[k]) for k in ("firstName", "lastName") if current.get(k))
    learner = str(
        current.get("fullName") or named or current.get("username") or current.get("userId")
        or parent.get("fullName") or parent.get("userId") or "A learner"
    )  # fmt: skip
    course = str(current.get("courseName") or current.get("name") or "a course")
    score = current.get("score")
    score = score if isinstance(score, int | float) and not isinstance(score, bool) else None
    change = str(event.get("type", "")).rsplit(".", 1)[-1]
    status, previous = event.get("status"), event.get("previousstatus")
    who, what = f"*{_escape(learner)}*", f"*{_escape(course)}*"
    scored = f" (score {score:g})" if score is not None else ""
    if change == "removed":
        line = f":wastebasket: {who} was removed from {what}"
    elif status == "Complete" and change in ("status_changed", "created"):
        line = f":white_check_mark: {who} completed {what}{scored}"
    elif status == "Failed" and change in ("status_changed", "created"):
        line = f":x: {who} failed {what}{scored}"
    elif change == "created":
        line = f":new: {who} enrolled in {what} ({status})"
    elif change == "progress_changed":
        progress = current.get("progress")
        done = f" {progress:g}%" if isinstance(progress, int | float) else ""
        line = f":chart_with_upwards_trend: {who} progressed in {what}{done}{scored}"
    else:
        line = f":arrows_counterclockwise: {who} · {what}: {previous} → {status}{scored}"
    return {
        "learner": learner,
        "course": course,
        "score": score,
        "change": change,
        "status": status,
        "previous_status": previous,
        "summary": line,
    }


def _when(time: Any) -> str:
    """Slack's date token: shown in each reader's time zone, the raw time as its fallback."""
    if not isinstance(time, str) or not time:
        return ""
    try:
        moment = parse_datetime(time)
    except ValueError:
        return _escape(time)
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{_escape(time)}>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _pick(
    loaded: dict[str, templates.BodyTemplate], facts: dict[str, Any]
) -> templates.BodyTemplate | None:
    for key in (facts["status"], facts["change"], "default"):
        if key and key in loaded:
            return loaded[key]
    return None


def _load_templates(sink: str, paths: dict[str, Path]) -> dict[str, templates.BodyTemplate]:
    def tojson(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    return {key: templates.load(sink, path, tojson=tojson) for key, path in paths.items()}


def _render(
    sink: str, template: templates.BodyTemplate, event: dict[str, Any], facts: dict[str, Any]
) -> dict[str, Any]:
    text = template.render(event.get("id"), event=event, **facts)
    try:
        message = json.loads(text)
    except ValueError as e:
        raise SinkError(
            sink, f"the message template for event {event.get('id')} is not JSON: {e}"
        ) from None
    if not isinstance(message, dict):
        raise SinkError(
            sink, f"the message template for event {event.get('id')} is not a JSON object"
        )
    message.setdefault("text", facts["summary"])
    return message
