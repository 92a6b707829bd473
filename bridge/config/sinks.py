"""The sinks' settings, one model per `type`, and SinkConfig choosing among them by it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config.base import _Model
from bridge.config.credentials import (
    AmqpUrl,
    HttpUrl,
    NatsUrl,
    RedisUrl,
    Secret,
    SlackUrl,
    WebhookSecret,
    _mask_headers,
    _secret_input,
)
from bridge.config.errors import Problem, _fail
from bridge.config.values import AnyDuration, ExistingFile, PositiveDuration, Slug, Template, Text


class PersonalDataConfig(_Model):
    """Fields of `data.current`, `.previous`, `.parent` a sink drops or hashes (Absorb's names)."""

    secret_keys: ClassVar[tuple[str, ...]] = ("hash_key",)

    drop: list[Text] = Field([])
    hash: list[Text] = Field([])
    hash_key: Secret | None = None

    @model_validator(mode="after")
    def _some_and_not_both(self) -> PersonalDataConfig:
        if not self.drop and not self.hash:
            raise ValueError("name the fields to drop or to hash, e.g. drop: [fullName]")
        both = sorted(set(self.drop) & set(self.hash))
        if both:
            raise ValueError(f"{', '.join(both)}: either dropped or hashed, not both")
        return self


class _Sink(_Model):
    name: Slug
    # Dead letters kept for the sink; beyond it the oldest go (and are counted).
    max_dead_letters: int = Field(10_000, ge=1)
    personal_data: PersonalDataConfig | None = None


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


class XapiSinkConfig(_Sink):
    """Sends each event as xAPI statements to a Learning Record Store."""

    secret_keys: ClassVar[tuple[str, ...]] = ("password", "bearer_token")

    type: Literal["xapi"]
    # The LRS's xAPI base, e.g. https://lrs.example.com/xAPI/ (statements go to <it>statements).
    endpoint: HttpUrl
    username: Text | None = None
    password: Secret | None = None
    bearer_token: Secret | None = None
    x_experience_api_version: Annotated[str, Field(pattern=r"^1\.0\.[0-9]+$")] = "1.0.3"
    # Events per POST; 1 sends each statement with its own PUT.
    batch_size: int = Field(50, ge=1, le=500)
    timeout_s: PositiveDuration = Field(15.0, alias="timeout")
    # The Absorb portal learners sign in to: the accounts' homePage and the activity
    # IRIs' base. Not given: the tenant's base_url (the events' `source`).
    portal: HttpUrl | None = None
    actor: Literal["account", "mbox"] = "account"
    language: Annotated[str, Field(pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")] = "en-US"
    tls_verify: bool = True
    retry_schedule_s: list[AnyDuration] | None = Field(None, alias="retry_schedule", min_length=1)
    rate_limit_per_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_in_flight: int = Field(8, ge=1)

    @field_validator("endpoint")
    @classmethod
    def _xapi_base(cls, endpoint: str) -> str:
        if "?" in endpoint or "#" in endpoint:
            raise ValueError("must be the LRS's xAPI base URL, without a query or fragment")
        # The base is a folder: `statements` is resolved under it.
        return endpoint if endpoint.endswith("/") else endpoint + "/"

    @model_validator(mode="after")
    def _one_credential(self) -> XapiSinkConfig:
        problems: list[Problem] = []
        basic = self.username is not None or self.password is not None
        if basic and (self.username is None or self.password is None):
            missing = "password" if self.password is None else "username"
            problems.append(((missing,), "required: HTTP Basic needs both username and password"))
        if basic and self.bearer_token is not None:
            problems.append((("bearer_token",), "give username/password or bearer_token, not both"))
        if not basic and self.bearer_token is None:
            problems.append(
                (
                    ("username",),
                    "required: the LRS's credentials (username and password, or bearer_token)",
                )
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
    "xapi": XapiSinkConfig,
}
SinkConfig = Annotated[
    FileSinkConfig
    | StdoutSinkConfig
    | HttpSinkConfig
    | SlackSinkConfig
    | RedisStreamSinkConfig
    | NatsSinkConfig
    | AmqpSinkConfig
    | SqsSinkConfig
    | XapiSinkConfig,
    Field(discriminator="type"),
]
