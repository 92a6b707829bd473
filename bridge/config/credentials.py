"""Secret and URL value types: checked without echoing them, masked whenever shown."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, SecretStr
from pydantic_core import PydanticCustomError

from bridge.redaction import MASK, mask_url


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


_SENSITIVE_HEADER = re.compile(r"(?i)auth|token|key|secret|cookie|password")


def _mask_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: MASK if _SENSITIVE_HEADER.search(k) else v for k, v in headers.items()}


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
