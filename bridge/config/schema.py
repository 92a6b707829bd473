"""`absorb-bridge config-schema`: the JSON Schema of the file as people write it.

The models' own schema describes values after loading; the file may also hold
`${NAME}` in any value, durations as text (`30s`), and `<key>_file` in place of
any secret. Every key carries a description, for editors.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.config.base import _Model
from bridge.config.models import Config

DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
#: A value that holds `${NAME}`: replaced from the environment before it is checked.
ENV_REFERENCE = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*\}",
    "description": "replaced from the environment variable named inside ${…}",
}
_META = ("title", "description", "default", "examples")

#: What each key means, by its name wherever it appears (a model's own doc says the rest).
DESCRIPTIONS = {
    "absorb": "the Absorb tenant and how hard the bridge may call it",
    "access_key_id": "AWS access key id (else the usual AWS credential chain)",
    "actor": "xapi: how statements name the learner: account (Absorb user id) | mbox (email)",
    "api_key": "the tenant's private API key",
    "base_url": "the tenant's REST API URL, or a region short name (us, ca, eu, au, sandbox-…)",
    "basic_auth": "HTTP Basic credentials sent with every request",
    "batch_size": "xapi: events sent in one POST (1: one PUT per statement)",
    "bearer_token": "sent as Authorization: Bearer",
    "console": "the operator's web console on http.listen: enabled, and the token it asks for",
    "course_id": "a course's GUID",
    "course_ids": "the courses to sweep (omit: every course, discovered and refreshed)",
    "credentials": "a NATS credentials file",
    "enabled": "console: serve the web console (off by default; needs console.token)",
    "details": "course_enrollments only: drill into lessons, chapters and attempts",
    "endpoint": "xapi: the LRS's xAPI base URL (ending in /xAPI/ or similar)",
    "endpoint_url": "another SQS endpoint (a stand-in such as moto or LocalStack)",
    "exchange": "the RabbitMQ exchange (empty: the default exchange)",
    "feeds": "what to sweep: each feed is a resource and its scopes",
    "fifo": "a FIFO queue: grouped by subject, de-duplicated by event id",
    "first_sync": "baseline: record silently | emit: emit created events",
    "format": "json: one CloudEvent per line | pretty: one readable line per event",
    "fsync": "flush to disk before an event counts as delivered",
    "headers": "extra headers sent with every request",
    "http": "the bridge's own HTTP server: /healthz, /readyz, /metrics and the console",
    "interval": "a promise: no scope goes unswept longer, while the budget allows (a duration)",
    "language": "xapi: the language tag of verb and activity names",
    "lesson_id": "a lesson's GUID",
    "lessons": "lesson_enrollments feeds: the lessons to sweep",
    "listen": "HOST:PORT to serve on (port 0: any free one; ABSORB_BRIDGE_HTTP_LISTEN: http)",
    "lookback": "overlap below the watermark on every sweep (a duration)",
    "max_dead_letters": "dead letters kept for replay; beyond it the oldest go",
    "max_in_flight": "concurrent deliveries (one enrollment's events stay in order)",
    "max_interval": "opt-in: a quiet scope's interval backs off up to this (a duration)",
    "max_quarantined": "quarantined records kept per feed; beyond it the oldest go",
    "max_requests_per_second": "the request budget for this Absorb tenant, shared by all replicas",
    "maxlen": "trim the stream to about this many entries",
    "mode": "structured: the CloudEvent is the body | binary: data as body, ce-* headers",
    "name": "a name: lowercase letters, digits, - and _",
    "page_size": "records per page (Absorb's _limit), 1..1000",
    "password": "a password (a secret: may be given as password_file)",
    "path": "a file path (absorb.webhooks: the URL path Absorb posts to)",
    "personal_data": "fields of data (current, previous, parent) this sink drops or hashes",
    "drop": "fields left out of data.current, .previous, .parent (Absorb's names: fullName, …)",
    "hash": "fields replaced by a keyed hash (hmac-sha256:<hex>): equal values still match",
    "hash_key": "the key of the hashes (a secret; without it they are plain sha256:<hex>)",
    "portal": "xapi: the Absorb portal URL: the learner accounts' homePage and activity IRIs",
    "prefix": "every Redis key starts with it",
    "previous_statuses": "match events whose status before the change is one of these",
    "progress_events": "also emit progress_changed events",
    "queue_url": "the SQS queue's URL",
    "rate_limit_per_s": "at most this many deliveries a second",
    "reconcile_every": "how often a full sweep looks for removed enrollments (a duration)",
    "recent_events": "delivered events the outbox keeps (the newest), for the console",
    "redis": "the Redis server holding snapshots, watermarks and the outbox",
    "region": "the AWS region",
    "removed_sink_grace": "how long a removed sink's outbox group is kept (a duration)",
    "resource": "course_enrollments | lesson_enrollments | session_enrollments | user_enrollments",
    "retry_schedule": "the pauses between tries (durations); exhausted events are dead-lettered",
    "routes": "which events go to which sinks (an event goes to every route it matches)",
    "routing_key": "the routing key template ({type}, {resource}, {change}, {status}, …)",
    "secret": "a sink's Standard Webhooks secret (whsec_…), or Absorb's webhook Secret Key",
    "secret_access_key": "AWS secret access key",
    "secrets": "several signing secrets while rotating",
    "servers": "NATS server URLs",
    "session_id": "a session's GUID",
    "sessions": "session_enrollments feeds: the sessions to sweep",
    "sinks": "where events are delivered",
    "statuses": "match events whose new status is one of these (enum names)",
    "stream": "the stream to publish to",
    "subject": "the subject template ({type}, {resource}, {change}, {status}, {feed}, {subject})",
    "template": "a Jinja2 template file for the body",
    "templates": "Jinja2 templates by status, change or `default`",
    "timeout": "no answer within it is a failed try (a duration)",
    "tls_verify": "verify the receiver's TLS certificate",
    "token": "a token (a secret: may be given as token_file); console: the one it asks for",
    "type": "the kind of sink",
    "types": "match these event types (absorb.<resource>.<change>)",
    "url": "a URL",
    "user_ids": "user_enrollments feeds: the users to sweep",
    "username": "the user name",
    "webhook_url": "the Slack incoming webhook URL (a secret)",
    "webhooks": "Absorb's own webhooks, taken as hints to sweep now: listen, path and secret",
    "x_experience_api_version": "xapi: the X-Experience-API-Version header (1.0.x)",
}


def file_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the config file before `${NAME}` and `*_file` are read."""
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    models = {cls.__name__: cls for cls in _models(Config)}
    for name, definition in schema.get("$defs", {}).items():
        model = models.get(name)
        if model is not None:
            _allow_secret_files(definition, model.secret_keys)
    _describe(schema)
    schema = dict(_written_forms(schema))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def print_schema() -> int:
    """Print the schema; the exit code."""
    print(json.dumps(file_schema(), indent=2))
    return 0


def _models(root: type[_Model]) -> list[type[_Model]]:
    found: list[type[_Model]] = []
    todo: list[type] = [root]
    while todo:
        cls = todo.pop()
        if not (isinstance(cls, type) and issubclass(cls, _Model)) or cls in found:
            continue
        found.append(cls)
        for field in cls.model_fields.values():
            todo += _types_in(field.annotation)
    return found


def _types_in(annotation: Any) -> list[type]:
    args = getattr(annotation, "__args__", ())
    found = [annotation] if isinstance(annotation, type) else []
    for arg in args:
        found += _types_in(arg)
    meta = getattr(annotation, "__origin__", None)
    if meta is not None and not args:
        found += _types_in(meta)
    return found


def _allow_secret_files(definition: dict[str, Any], secret_keys: tuple[str, ...]) -> None:
    """Each secret key may be given as `<key>_file` instead; one of them where it is required."""
    properties = definition.setdefault("properties", {})
    required = definition.get("required", [])
    for key in secret_keys:
        properties[f"{key}_file"] = {
            "type": "string",
            "description": f"read {key} from this file (one trailing newline dropped)",
        }
        if key in required:
            required.remove(key)
            definition.setdefault("allOf", []).append(
                {"oneOf": [{"required": [key]}, {"required": [f"{key}_file"]}]}
            )
    if "required" in definition and not required:
        del definition["required"]


def _describe(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            if isinstance(value, dict) and "description" not in value and key in DESCRIPTIONS:
                value["description"] = DESCRIPTIONS[key]
        for value in node.values():
            _describe(value)
    elif isinstance(node, list):
        for value in node:
            _describe(value)


def _written_forms(node: Any) -> Any:
    """Every checked scalar may also be `${NAME}`; a duration may be text such as `30s`."""
    if isinstance(node, list):
        return [_written_forms(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: (v if k in ("properties", "$defs") else _written_forms(v)) for k, v in node.items()}
    for group in ("properties", "$defs"):
        if group in node:
            node[group] = {k: _written_forms(v) for k, v in node[group].items()}
    if node.get("format") == "duration":
        meta = {k: node[k] for k in _META if k in node}
        return {**meta, "anyOf": [_duration_forms(), ENV_REFERENCE]}
    if _is_checked_scalar(node) and not _is_discriminator(node):
        meta = {k: node.pop(k) for k in _META if k in node}
        return {**meta, "anyOf": [node, ENV_REFERENCE]}
    return node


def _duration_forms() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": DURATION_PATTERN},
        ]
    }


def _is_checked_scalar(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    if kind in ("number", "integer", "boolean"):
        return True
    return kind == "string" and any(k in node for k in ("enum", "pattern", "format", "minLength"))


def _is_discriminator(node: dict[str, Any]) -> bool:
    # A sink's `type` picks its model: left exact, so the union can tell the models apart.
    return "const" in node
