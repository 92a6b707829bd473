"""The config file: YAML with `${NAME}` from the environment, validated into typed models.

`load_config` reports every problem at once, each named by its path in the file
(`feeds[0].interval: ...`), and never echoes a secret. Field names in code carry
their units (`interval_s`); the YAML keys are the contract's (`interval`), by alias.

`loading` reads the file through `sources` (YAML, `${NAME}`, `*_file` secrets) into
the models (`models`, `feeds`, `sinks`, on `base`, typed by `values` and
`credentials`); `checks` and `problems` turn what is wrong into `errors`.
"""

from __future__ import annotations

from bridge.config.credentials import (
    AmqpUrl,
    HttpUrl,
    NatsUrl,
    RedisUrl,
    Secret,
    SlackUrl,
    WebhookSecret,
)
from bridge.config.errors import ConfigError, Loc, Problem, format_path
from bridge.config.feeds import (
    RESOURCES,
    FeedConfig,
    LessonScope,
    Resource,
    SessionScope,
)
from bridge.config.loading import CONFIG_ENV, config_path, load_config, parse_config
from bridge.config.models import (
    AbsorbConfig,
    Config,
    ConsoleConfig,
    HttpServerConfig,
    RedisConfig,
    RouteConfig,
    WebhooksConfig,
)
from bridge.config.sinks import (
    SINK_TYPES,
    AmqpSinkConfig,
    BasicAuth,
    FileSinkConfig,
    HttpSinkConfig,
    NatsSinkConfig,
    PersonalDataConfig,
    RedisStreamSinkConfig,
    SinkConfig,
    SlackSinkConfig,
    SqsSinkConfig,
    StdoutSinkConfig,
    XapiSinkConfig,
)
from bridge.config.values import (
    EVENT_CHANGES,
    EVENT_RESOURCES,
    TEMPLATE_FIELDS,
    AnyDuration,
    Duration,
    EventType,
    ExistingFile,
    Guid,
    PositiveDuration,
    Slug,
    StatusName,
    Template,
    Text,
    format_duration,
)
from bridge.redaction import mask_url

__all__ = [
    "CONFIG_ENV",
    "EVENT_CHANGES",
    "EVENT_RESOURCES",
    "RESOURCES",
    "SINK_TYPES",
    "TEMPLATE_FIELDS",
    "AbsorbConfig",
    "AmqpSinkConfig",
    "AmqpUrl",
    "AnyDuration",
    "BasicAuth",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "Duration",
    "EventType",
    "ExistingFile",
    "FeedConfig",
    "FileSinkConfig",
    "Guid",
    "HttpServerConfig",
    "HttpSinkConfig",
    "HttpUrl",
    "LessonScope",
    "Loc",
    "NatsSinkConfig",
    "NatsUrl",
    "PersonalDataConfig",
    "PositiveDuration",
    "Problem",
    "RedisConfig",
    "RedisStreamSinkConfig",
    "RedisUrl",
    "Resource",
    "RouteConfig",
    "Secret",
    "SessionScope",
    "SinkConfig",
    "SlackSinkConfig",
    "SlackUrl",
    "Slug",
    "SqsSinkConfig",
    "StatusName",
    "StdoutSinkConfig",
    "Template",
    "Text",
    "WebhookSecret",
    "WebhooksConfig",
    "XapiSinkConfig",
    "config_path",
    "format_duration",
    "format_path",
    "load_config",
    "mask_url",
    "parse_config",
]
