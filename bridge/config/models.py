"""The whole config: Absorb, Redis, routes, the HTTP server, and Config holding them all."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from bridge.absorb.paths import resolve_base_url
from bridge.config.base import _Model
from bridge.config.checks import _cross_references
from bridge.config.credentials import RedisUrl, Secret
from bridge.config.errors import _fail
from bridge.config.feeds import FeedConfig
from bridge.config.sinks import RedisStreamSinkConfig, SinkConfig
from bridge.config.values import EventType, Guid, PositiveDuration, StatusName, Text, _listen


class WebhooksConfig(_Model):
    """Absorb's own webhooks, taken as hints: where they arrive and the key that signs them."""

    secret_keys: ClassVar[tuple[str, ...]] = ("secret",)

    listen: Annotated[str, AfterValidator(_listen)] = "0.0.0.0:8088"
    path: Annotated[str, AfterValidator(_path)] = "/absorb/webhooks"
    secret: Secret

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return _host(self.listen)

    @property
    def port(self) -> int:
        """The port to bind."""
        return _port(self.listen)


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
    webhooks: WebhooksConfig | None = None


class RedisConfig(_Model):
    """The Redis server holding snapshots, watermarks and the outbox."""

    secret_keys: ClassVar[tuple[str, ...]] = ("url",)

    url: RedisUrl = Field("redis://127.0.0.1:6379/0", repr=False)
    prefix: Text = "absorb-bridge"
    # Records kept in each feed's quarantine; beyond it the longest-quarantined go.
    max_quarantined: int = Field(10_000, ge=1)
    # How long the outbox keeps entries for a sink no replica feeds any more (one that
    # left the config) before its consumer group is dropped.
    removed_sink_grace_s: PositiveDuration = Field(7 * 86400.0, alias="removed_sink_grace")
    # Delivered events the outbox keeps anyway, newest first, for the console's recent events.
    recent_events: int = Field(1000, ge=0)


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
        return _host(self.listen)

    @property
    def port(self) -> int:
        """The port to bind."""
        return _port(self.listen)


class ConsoleConfig(_Model):
    """The operator's web console on `http.listen`: off unless enabled, and then behind a token."""

    secret_keys: ClassVar[tuple[str, ...]] = ("token",)

    enabled: bool = False
    # Checked even when absent, so an enabled console without a token is named here.
    token: Secret | None = Field(None, validate_default=True)

    @field_validator("token")
    @classmethod
    def _token_when_enabled(cls, token: Any, info: ValidationInfo) -> Any:
        if token is None and info.data.get("enabled"):
            raise ValueError("required when console.enabled is true (token, token_file or ${NAME})")
        return token


def _host(listen: str) -> str:
    return listen.rpartition(":")[0].strip("[]")


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def _path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in "?# ") or "//" in value:
        raise ValueError("must be a URL path starting with / (no spaces, query or fragment)")
    return value


_CROSS_CHECKED = "cross_checked"


class Config(_Model):
    """The whole config file."""

    absorb: AbsorbConfig
    redis: RedisConfig = Field(default_factory=RedisConfig)
    feeds: list[FeedConfig] = Field(min_length=1)
    sinks: list[SinkConfig] = Field([])
    routes: list[RouteConfig] = Field([])
    http: HttpServerConfig = Field(default_factory=HttpServerConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)

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
