"""The config file: YAML with `${NAME}` from the environment, validated into typed models.

`load_config` reports every problem at once, each named by its path in the file
(`feeds[0].interval: ...`), and never echoes a secret. Field names in code carry
their units (`interval_s`); the YAML keys are the contract's (`interval`), by alias.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from bridge.absorb.models import Status
from bridge.absorb.paths import resolve_base_url
from bridge.durations import parse_duration
from bridge.errors import BridgeError
from bridge.redaction import MASK

CONFIG_ENV = "ABSORB_BRIDGE_CONFIG"
RESOURCES = ("course_enrollments", "lesson_enrollments", "session_enrollments", "user_enrollments")
EVENT_RESOURCES = (
    "course_enrollment",
    "lesson_enrollment",
    "session_enrollment",
    "chapter_enrollment",
    "attempt",
)
EVENT_CHANGES = ("created", "status_changed", "progress_changed", "removed")
# The fields a subject or routing-key template may use: `type` is the whole event
# type, `resource` and `change` its parts, `subject` the enrollment (or attempt) id.
TEMPLATE_FIELDS = ("type", "resource", "change", "status", "feed", "subject")

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]


class ConfigError(BridgeError):
    """The config is unusable; `problems` names each one as `<path in the file>: <message>`."""

    def __init__(self, problems: str | list[str], *, path: Path | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.path = path
        super().__init__("\n".join(self.problems))


# ---- value types -------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """A duration as a person writes it (`30s`, `10m`, `1d`, `500ms`); parse_duration reads it."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001)):
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def _duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a duration like 30s, not true or false")
    if isinstance(value, str | int | float):
        return parse_duration(value)
    return value


_render_duration = PlainSerializer(format_duration, return_type=str, when_used="json")
Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0, allow_inf_nan=False)]
PositiveDuration = Annotated[Duration, Field(gt=0), _render_duration]
AnyDuration = Annotated[Duration, _render_duration]


@dataclass(frozen=True)
class _FileProblem:
    """Stands in for a secret whose `_file` could not be used; reported under `key`."""

    key: str
    message: str


def _secret_input(value: Any) -> Any:
    if isinstance(value, _FileProblem):
        raise PydanticCustomError(
            "secret_file", "{message}", {"message": value.message, "key": value.key}
        )
    if isinstance(value, str) and not value:
        raise ValueError("must not be empty")
    return value


def _mask_secret(_: Any) -> str:
    return MASK


def mask_url(url: str) -> str:
    """The URL with the password of its user part (and any `password=` query) as `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else netloc
    query = re.sub(r"(?i)((?:^|&)password=)[^&]*", rf"\g<1>{MASK}", parts.query)
    return parts._replace(netloc=netloc, query=query).geturl()


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    """The URL, stripped, if its scheme is one of `schemes`; never echoes it (passwords)."""
    wanted = " or ".join(f"{s}://" for s in schemes)
    need = f"must be a URL starting with {wanted}"
    try:
        parts = urlsplit(value.strip())
        _ = parts.port
    except ValueError:
        raise ValueError(need) from None
    has_place = bool(parts.hostname) or (parts.scheme == "unix" and bool(parts.path))
    if parts.scheme.lower() not in schemes or not has_place:
        raise ValueError(need)
    return value.strip()


def _url(*schemes: str) -> AfterValidator:
    return AfterValidator(lambda value: _check_url(value, schemes))


def _secret_url(*schemes: str) -> AfterValidator:
    def check(secret: SecretStr) -> SecretStr:
        _check_url(secret.get_secret_value(), schemes)
        return secret

    return AfterValidator(check)


def _webhook_secret(secret: SecretStr) -> SecretStr:
    value = secret.get_secret_value()
    if not value.startswith("whsec_"):
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ is not valid base64") from None
    if not key:
        raise ValueError("the part after whsec_ is empty")
    return secret


def _guid(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", value):
        raise ValueError(f"{value!r} is not a GUID (like 3fa85f64-5717-4562-b3fc-2c963f66afa6)")
    return value.lower()


def _slug(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits, - and _,"
            " starting with a letter or digit"
        )
    return value


def _event_type(value: str) -> str:
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != "absorb":
        raise ValueError(f"{value!r} is not an event type: use absorb.<resource>.<change>")
    if parts[1] not in EVENT_RESOURCES:
        raise ValueError(f"{value!r}: unknown resource {parts[1]!r} ({', '.join(EVENT_RESOURCES)})")
    if parts[2] not in EVENT_CHANGES:
        raise ValueError(f"{value!r}: unknown change {parts[2]!r} ({', '.join(EVENT_CHANGES)})")
    return value


def _status_name(value: str) -> str:
    if value not in Status.__members__:
        close = difflib.get_close_matches(value, Status.__members__, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown status {value!r} ({hint}statuses: {', '.join(Status.__members__)})"
        )
    return value


def _template(value: str) -> str:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as e:
        raise ValueError(f"is not a valid template: {e}") from None
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown field {{{name}}} (fields: {', '.join(TEMPLATE_FIELDS)})")
    return value


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"no such file: {value}")
    return value


def _listen(value: str) -> str:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not a listen address: use HOST:PORT, like 127.0.0.1:9464")
    return value


_SENSITIVE_HEADER = re.compile(r"(?i)auth|token|key|secret|cookie|password")


def _mask_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: MASK if _SENSITIVE_HEADER.search(k) else v for k, v in headers.items()}


Text = Annotated[str, Field(min_length=1)]
Slug = Annotated[str, AfterValidator(_slug)]
Guid = Annotated[str, AfterValidator(_guid)]
EventType = Annotated[str, AfterValidator(_event_type)]
StatusName = Annotated[str, AfterValidator(_status_name)]
Template = Annotated[str, AfterValidator(_template)]
ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
_hide = PlainSerializer(_mask_secret, return_type=str, when_used="json")
Secret = Annotated[SecretStr, BeforeValidator(_secret_input), _hide]
WebhookSecret = Annotated[
    SecretStr, BeforeValidator(_secret_input), AfterValidator(_webhook_secret), _hide
]
_show_url = PlainSerializer(mask_url, return_type=str, when_used="json")
HttpUrl = Annotated[str, _url("http", "https")]
RedisUrl = Annotated[
    str, BeforeValidator(_secret_input), _url("redis", "rediss", "unix"), _show_url
]
AmqpUrl = Annotated[str, BeforeValidator(_secret_input), _url("amqp", "amqps"), _show_url]
NatsUrl = Annotated[str, _url("nats", "tls", "ws", "wss"), _show_url]
SlackUrl = Annotated[
    SecretStr,
    BeforeValidator(_secret_input),
    _secret_url("https"),
    _hide,
]


# ---- secret files ------------------------------------------------------------------


def _read_secret_file(key: str, path: Any) -> str | list[str] | _FileProblem:
    file_key = f"{key}_file"
    if not isinstance(path, str) or not path:
        return _FileProblem(file_key, "must be the path of a file holding the secret")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        return _FileProblem(file_key, f"cannot read {path}: {reason}")
    if key == "secrets":  # one secret a line, for rotation
        return [line.strip() for line in text.splitlines() if line.strip()]
    return text.removesuffix("\n").removesuffix("\r")


class _Model(BaseModel):
    """Base of every config model: unknown keys are errors, inputs never appear in errors."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    # YAML keys that hold a secret and may instead be read from `<key>_file`.
    secret_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not cls.secret_keys or not isinstance(data, dict):
            return data
        data = dict(data)
        for key in cls.secret_keys:
            file_key = f"{key}_file"
            if file_key not in data:
                continue
            path = data.pop(file_key)
            if key in data:
                data[key] = _FileProblem(key, f"give {key} or {file_key}, not both")
            else:
                data[key] = _read_secret_file(key, path)
        return data


def _fail(problems: list[Problem]) -> ValidationError:
    """A ValidationError whose errors sit at `loc`s relative to the model raising it."""
    return ValidationError.from_exception_data(
        "config",
        [
            InitErrorDetails(
                type=PydanticCustomError("config", "{message}", {"message": message}),
                loc=loc,
                input=None,
            )
            for loc, message in problems
        ],
    )


# ---- the models --------------------------------------------------------------------


class AbsorbConfig(_Model):
    """The Absorb tenant and how hard the bridge may call it."""

    secret_keys: ClassVar[tuple[str, ...]] = ("api_key", "password")

    base_url: Annotated[str, AfterValidator(resolve_base_url)]
    api_key: Secret
    username: Text
    password: Secret
    max_requests_per_second: float = Field(20.0, gt=0, allow_inf_nan=False)
    page_size: int = Field(500, ge=1, le=1000)
    timeout_s: PositiveDuration = Field(30.0, alias="timeout")


class RedisConfig(_Model):
    """The Redis server holding snapshots, watermarks and the outbox."""

    secret_keys: ClassVar[tuple[str, ...]] = ("url",)

    url: RedisUrl = Field("redis://127.0.0.1:6379/0", repr=False)
    prefix: Text = "absorb-bridge"


class LessonScope(_Model):
    """One lesson of one course whose enrollments a lesson_enrollments feed sweeps."""

    course_id: Guid
    lesson_id: Guid


class SessionScope(_Model):
    """One session of one course whose enrollments a session_enrollments feed sweeps."""

    course_id: Guid
    session_id: Guid


Resource = Literal[
    "course_enrollments", "lesson_enrollments", "session_enrollments", "user_enrollments"
]
# Which resource each scope key belongs to; the first three are required for theirs.
_SCOPE_OF = {
    "lessons": "lesson_enrollments",
    "sessions": "session_enrollments",
    "user_ids": "user_enrollments",
    "course_ids": "course_enrollments",
    "details": "course_enrollments",
}
_SCOPE_HINT = {
    "lessons": "a list of {course_id, lesson_id}",
    "sessions": "a list of {course_id, session_id}",
    "user_ids": "a list of user GUIDs",
}
DEFAULT_MAX_INTERVAL_S = 300.0


class FeedConfig(_Model):
    """One resource swept on a schedule: what to sweep, how often, what to emit."""

    name: Slug
    resource: Resource
    course_ids: list[Guid] | None = Field(None, min_length=1, validate_default=True)
    lessons: list[LessonScope] | None = Field(None, min_length=1, validate_default=True)
    sessions: list[SessionScope] | None = Field(None, min_length=1, validate_default=True)
    user_ids: list[Guid] | None = Field(None, min_length=1, validate_default=True)
    interval_s: PositiveDuration = Field(30.0, alias="interval")
    lookback_s: AnyDuration = Field(600.0, alias="lookback")
    first_sync: Literal["baseline", "emit"] = "baseline"
    details: list[Literal["lessons", "chapters", "attempts"]] = Field([], validate_default=True)
    progress_events: bool = False
    reconcile_every_s: PositiveDuration = Field(86400.0, alias="reconcile_every")
    # How far a quiet scope's interval backs off; never below `interval`.
    max_interval_s: PositiveDuration = Field(None, alias="max_interval", validate_default=True)

    @field_validator("lessons", "sessions", "user_ids", "course_ids", "details")
    @classmethod
    def _fits_resource(cls, value: Any, info: ValidationInfo) -> Any:
        resource = info.data.get("resource")
        key = info.field_name or ""
        wanted = _SCOPE_OF[key]
        if resource is None:
            return value
        if not value:
            if resource == wanted and key in _SCOPE_HINT:
                raise ValueError(f"required for resource {wanted}: {_SCOPE_HINT[key]}")
            return value
        if resource != wanted:
            raise ValueError(f"only for resource {wanted}, not {resource}")
        return list(dict.fromkeys(value)) if key == "details" else value

    @field_validator("max_interval_s", mode="before")
    @classmethod
    def _default_max_interval(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return max(DEFAULT_MAX_INTERVAL_S, info.data.get("interval_s", 0.0))
        return value

    @field_validator("max_interval_s")
    @classmethod
    def _not_below_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval_s")
        if interval is not None and value < interval:
            raise ValueError(f"must be at least interval ({format_duration(interval)})")
        return value


class _Sink(_Model):
    name: Slug


class FileSinkConfig(_Sink):
    """Appends one event a line, as JSON, to a file."""

    type: Literal["file"]
    path: Path
    fsync: bool = True


class StdoutSinkConfig(_Sink):
    """Prints each event: one JSON line, or a readable summary (`pretty`)."""

    type: Literal["stdout"]
    format: Literal["json", "pretty"] = "json"


class BasicAuth(_Model):
    """HTTP basic authentication for a webhook."""

    secret_keys: ClassVar[tuple[str, ...]] = ("password",)

    username: Text
    password: Secret


# Headers the bridge sets itself on every delivery.
_OWN_HEADERS = ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature")


class HttpSinkConfig(_Sink):
    """POSTs each event to a URL, signed the Standard Webhooks way."""

    secret_keys: ClassVar[tuple[str, ...]] = ("secret", "secrets", "bearer_token")

    type: Literal["http"]
    url: HttpUrl
    secret: WebhookSecret | None = None
    # Several secrets while rotating: each delivery carries a signature per secret.
    secrets: Annotated[list[WebhookSecret], BeforeValidator(_secret_input)] | None = Field(
        None, min_length=1
    )
    mode: Literal["structured", "binary"] = "structured"
    # Headers may carry credentials (X-Api-Key: ...): masked when shown, kept out of repr.
    headers: Annotated[dict[str, str], PlainSerializer(_mask_headers, when_used="json")] = Field(
        {}, repr=False
    )
    bearer_token: Secret | None = None
    basic_auth: BasicAuth | None = None
    timeout_s: PositiveDuration = Field(15.0, alias="timeout")
    tls_verify: bool = True
    template: ExistingFile | None = None
    retry_schedule_s: list[AnyDuration] | None = Field(None, alias="retry_schedule", min_length=1)
    rate_limit_per_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_in_flight: int = Field(8, ge=1)

    @field_validator("headers")
    @classmethod
    def _not_own_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"{name!r} is not a header name")
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"{name} is set by the bridge and cannot be overridden")
        return headers

    @model_validator(mode="after")
    def _one_signing_key(self) -> HttpSinkConfig:
        problems: list[Problem] = []
        if self.secret is None and self.secrets is None:
            problems.append(
                (("secret",), "required: the whsec_ secret that signs deliveries (or secrets)")
            )
        if self.secret is not None and self.secrets is not None:
            problems.append((("secrets",), "give secret or secrets, not both"))
        if self.bearer_token is not None and self.basic_auth is not None:
            problems.append((("basic_auth",), "give bearer_token or basic_auth, not both"))
        if (self.bearer_token or self.basic_auth) and "authorization" in map(
            str.lower, self.headers
        ):
            problems.append((("headers",), "Authorization is set by bearer_token or basic_auth"))
        if problems:
            raise _fail(problems)
        return self

    def signing_secrets(self) -> list[SecretStr]:
        """Every secret deliveries are signed with (one, or several while rotating)."""
        return [self.secret] if self.secret is not None else list(self.secrets or [])


class SlackSinkConfig(_Sink):
    """Posts a message per event to a Slack incoming webhook."""

    secret_keys: ClassVar[tuple[str, ...]] = ("webhook_url",)

    type: Literal["slack"]
    # Secret: anyone holding an incoming-webhook URL can post to the channel.
    webhook_url: SlackUrl
    templates: dict[Text, ExistingFile] | None = None
    rate_limit_per_s: float = Field(1.0, gt=0, allow_inf_nan=False)


class RedisStreamSinkConfig(_Sink):
    """XADDs each event to a Redis stream."""

    secret_keys: ClassVar[tuple[str, ...]] = ("url",)

    type: Literal["redis_stream"]
    stream: Text
    # None until loaded: then the bridge's own Redis URL when not given.
    url: RedisUrl | None = Field(None, repr=False)
    maxlen: int | None = Field(None, ge=1)  # trimmed approximately (MAXLEN ~)


class NatsSinkConfig(_Sink):
    """Publishes each event to NATS (JetStream when `stream` is given)."""

    secret_keys: ClassVar[tuple[str, ...]] = ("token",)

    type: Literal["nats"]
    servers: list[NatsUrl] = Field(["nats://127.0.0.1:4222"], min_length=1, repr=False)
    subject: Template = "absorb.{resource}.{change}"
    stream: Text | None = None
    credentials: ExistingFile | None = None  # a NATS .creds file
    token: Secret | None = None


class AmqpSinkConfig(_Sink):
    """Publishes each event to an AMQP 0-9-1 exchange (RabbitMQ)."""

    secret_keys: ClassVar[tuple[str, ...]] = ("url",)

    type: Literal["amqp"]
    url: AmqpUrl = Field(repr=False)
    exchange: str = ""
    routing_key: Template = "absorb.{resource}.{change}"


class SqsSinkConfig(_Sink):
    """Sends each event to an Amazon SQS queue (FIFO queues keep each enrollment's order)."""

    secret_keys: ClassVar[tuple[str, ...]] = ("secret_access_key",)

    type: Literal["sqs"]
    queue_url: HttpUrl
    region: Text | None = None
    endpoint_url: HttpUrl | None = None
    fifo: bool = Field(None, validate_default=True)
    access_key_id: Text | None = None
    secret_access_key: Secret | None = None

    @field_validator("fifo", mode="before")
    @classmethod
    def _fifo_from_url(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return str(info.data.get("queue_url", "")).endswith(".fifo")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SqsSinkConfig:
        problems: list[Problem] = []
        if self.fifo != self.queue_url.endswith(".fifo"):
            problems.append((("fifo",), "must match the queue: FIFO queue URLs end with .fifo"))
        if (self.access_key_id is None) != (self.secret_access_key is None):
            problems.append(
                (("secret_access_key",), "give access_key_id and secret_access_key together")
            )
        if problems:
            raise _fail(problems)
        return self


SINK_TYPES: dict[str, type[_Sink]] = {
    "file": FileSinkConfig,
    "stdout": StdoutSinkConfig,
    "http": HttpSinkConfig,
    "slack": SlackSinkConfig,
    "redis_stream": RedisStreamSinkConfig,
    "nats": NatsSinkConfig,
    "amqp": AmqpSinkConfig,
    "sqs": SqsSinkConfig,
}
SinkConfig = Annotated[
    FileSinkConfig
    | StdoutSinkConfig
    | HttpSinkConfig
    | SlackSinkConfig
    | RedisStreamSinkConfig
    | NatsSinkConfig
    | AmqpSinkConfig
    | SqsSinkConfig,
    Field(discriminator="type"),
]


class RouteConfig(_Model):
    """Sends the events matching every given filter to its sinks (no filter: every event).

    Within one filter any listed value matches; `statuses` is the new status,
    `previous_statuses` the one before the change.
    """

    sinks: list[Text] = Field(min_length=1)
    types: list[EventType] | None = Field(None, min_length=1)
    statuses: list[StatusName] | None = Field(None, min_length=1)
    previous_statuses: list[StatusName] | None = Field(None, min_length=1)
    course_ids: list[Guid] | None = Field(None, min_length=1)
    feeds: list[Text] | None = Field(None, min_length=1)


class HttpServerConfig(_Model):
    """The bridge's own HTTP server (health and metrics)."""

    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9464"

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port to bind."""
        return int(self.listen.rpartition(":")[2])


_CROSS_CHECKED = "cross_checked"


class Config(_Model):
    """The whole config file."""

    absorb: AbsorbConfig
    redis: RedisConfig = Field(default_factory=RedisConfig)
    feeds: list[FeedConfig] = Field(min_length=1)
    sinks: list[SinkConfig] = []
    routes: list[RouteConfig] = []
    http: HttpServerConfig = Field(default_factory=HttpServerConfig)

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Config:
        for sink in self.sinks:
            if isinstance(sink, RedisStreamSinkConfig) and sink.url is None:
                sink.url = self.redis.url
        # load_config has checked them on the raw data already, along with everything else.
        if not (info.context or {}).get(_CROSS_CHECKED):
            problems = _cross_references(self.model_dump(by_alias=True))
            if problems:
                raise _fail(problems)
        return self

    def masked(self) -> dict[str, Any]:
        """The effective config for people: defaults filled in, durations as `30s`, no secrets."""
        shown: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return shown

    def sink(self, name: str) -> SinkConfig:
        """The sink called `name`; KeyError if there is none."""
        for sink in self.sinks:
            if sink.name == name:
                return sink
        raise KeyError(name)

    def feed(self, name: str) -> FeedConfig:
        """The feed called `name`; KeyError if there is none."""
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise KeyError(name)


# ---- cross references and warnings -------------------------------------------------


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
    return problems


def _warnings(config: Config) -> list[str]:
    routed = {name for route in config.routes for name in route.sinks}
    warnings = [
        f"sinks[{i}]: no route names sink {sink.name!r}, so it receives no events"
        for i, sink in enumerate(config.sinks)
        if sink.name not in routed
    ]
    if not config.routes:
        warnings.append("routes: none given, so events are detected but delivered nowhere")
    return warnings


# ---- environment substitution ------------------------------------------------------

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _substitute(value: Any, env: Mapping[str, str], loc: Loc, problems: list[Problem]) -> Any:
    """Every string in the tree with `${NAME}` replaced from `env` and `$${` made `${`."""
    if isinstance(value, dict):
        return {k: _substitute(v, env, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, (*loc, i), problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        whole, name = m.group(0), m.group(1)
        if whole == "$${":
            return "${"
        if name is None:
            problems.append((loc, "unterminated ${ (write $${ for a literal ${)"))
        elif not _VAR_NAME.fullmatch(name):
            problems.append(
                (loc, f"${{{name}}} is not a variable: use ${{NAME}} (letters, digits, _)")
            )
        elif name not in env:
            problems.append((loc, f"environment variable {name} is not set"))
        else:
            return env[name]
        return whole

    return _REFERENCE.sub(replace, value)


# ---- YAML --------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """A safe loader that notes duplicate keys instead of keeping the last one silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            if key_node.value in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    f"line {mark.line + 1}, column {mark.column + 1}:"
                    f" duplicate key {key_node.value!r}"
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str) -> tuple[Any, list[str]]:
    loader = _Loader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    except yaml.MarkedYAMLError as e:
        # Built from the parts, not str(e): that quotes the offending line, secrets and all.
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        what = e.problem or e.context or "not valid YAML"
        raise ConfigError([f"{where}: {what}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"YAML: {type(e).__name__}"]) from None
    finally:
        loader.dispose()


# ---- pydantic errors as problems ---------------------------------------------------


def _models_in(annotation: Any) -> list[type[_Model]]:
    if isinstance(annotation, type) and issubclass(annotation, _Model):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _model_at(loc: Loc) -> type[_Model] | None:
    """The model that validates the mapping at `loc` (pydantic's loc, union tags included)."""
    candidates: list[type[_Model]] = [Config]
    for part in loc:
        if isinstance(part, int):
            continue
        if part in SINK_TYPES and SINK_TYPES[part] in candidates:
            candidates = [SINK_TYPES[part]]
            continue
        candidates = [
            model
            for candidate in candidates
            for name, field in candidate.model_fields.items()
            if (field.alias or name) == part
            for model in _models_in(field.annotation)
        ]
    return candidates[0] if len(candidates) == 1 else None


def _keys(model: type[_Model]) -> list[str]:
    keys = [field.alias or name for name, field in model.model_fields.items()]
    return keys + [f"{key}_file" for key in model.secret_keys]


def _message(error: ErrorDetails) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx", {})
    if kind == "missing":
        model = _model_at(loc[:-1])
        if model is not None and loc[-1] in model.secret_keys:
            return f"required (or {loc[-1]}_file: a file holding it)"
        return "required"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        keys = _keys(model) if model else []
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(keys)}"
        return f"unknown key ({hint})"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    simple = {
        "model_type": "must be a mapping (key: value)",
        "model_attributes_type": "must be a mapping (key: value)",
        "dict_type": "must be a mapping (key: value)",
        "list_type": "must be a list",
        "string_type": "must be a string",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "finite_number": "must be a finite number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "path_type": "must be a file path",
    }
    if kind in simple:
        return simple[kind]
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    bounds = {
        "greater_than": ("gt", "greater than"),
        "greater_than_equal": ("ge", "at least"),
        "less_than": ("lt", "less than"),
        "less_than_equal": ("le", "at most"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return f"must be {words} {ctx[key]}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def _problem(error: ErrorDetails) -> Problem:
    loc: Loc = tuple(error["loc"])
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "union_tag_invalid":
        return (*loc, "type"), f"unknown sink type {ctx['tag']!r} (types: {', '.join(SINK_TYPES)})"
    if kind == "union_tag_not_found":
        return (*loc, "type"), f"required: the kind of sink ({', '.join(SINK_TYPES)})"
    message = _message(error)
    if kind == "secret_file":
        loc = (*loc[:-1], ctx["key"])
    # The discriminated union puts the sink's type into the loc; it is not in the file.
    if loc[:1] == ("sinks",) and len(loc) > 2 and loc[2] in SINK_TYPES:
        loc = loc[:2] + loc[3:]
    return loc, message


def format_path(loc: Loc) -> str:
    """A loc as the path a person finds in the file: `feeds[0].interval`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "(top level)"


_SECTIONS = ("absorb", "redis", "feeds", "sinks", "routes", "http")


def _file_order(problem: Problem) -> tuple[int, int]:
    loc = problem[0]
    section = _SECTIONS.index(loc[0]) if loc and loc[0] in _SECTIONS else len(_SECTIONS)
    index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1
    return section, index


# ---- loading -----------------------------------------------------------------------


def parse_config(text: str, env: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """The config in `text` and its warnings; ConfigError naming every problem otherwise."""
    env = os.environ if env is None else env
    raw, yaml_problems = _load_yaml(text)
    if raw is None:
        raise ConfigError(["(top level): the file is empty"])
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping with absorb, feeds, sinks, routes"])
    problems: list[Problem] = []
    data = _substitute(raw, env, (), problems)
    unset = {loc for loc, _ in problems}  # their values are placeholders: don't judge them
    problems += _cross_references(data)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={_CROSS_CHECKED: True})
    except ValidationError as e:
        found = (_problem(error) for error in e.errors(include_url=False, include_input=False))
        problems += [p for p in found if p[0] not in unset]
    if yaml_problems or problems or config is None:
        problems.sort(key=_file_order)
        raise ConfigError(yaml_problems + [f"{format_path(loc)}: {msg}" for loc, msg in problems])
    return config, _warnings(config)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """The config in the file at `path` and its warnings; ConfigError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([f"cannot read {path}: {reason}"], path=path) from e
    try:
        return parse_config(text, env)
    except ConfigError as e:
        e.path = path
        raise


def config_path(cli_value: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The config file: `--config`, else ABSORB_BRIDGE_CONFIG; ConfigError if neither."""
    env = os.environ if env is None else env
    value = cli_value or env.get(CONFIG_ENV)
    if not value:
        raise ConfigError(f"no config file: pass --config FILE or set {CONFIG_ENV}")
    return Path(value)
