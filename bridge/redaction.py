"""Keeping secrets out of everything a person or a log can read."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

# The password of a URL's user part. The password runs to the last `@` before the
# host, as urllib reads it, so one holding `@` or `:` is masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)[^\s/?#]*@")
# A query parameter whose name says it carries a credential (token, access_token,
# sig, X-Amz-Signature, key, api_key, password, ...).
_QUERY_CREDENTIAL = re.compile(
    r"(?P<head>[?&](?:[^\s=&#]*[-_.])?"
    r"(?:api|access|refresh|id|auth|client|private|security|session)?"
    r"(?:token|sig|signature|key|secret|password|passwd|pwd|auth|authorization|credential|code)"
    r"s?=)[^\s&#]*",
    re.IGNORECASE,
)
# A Slack webhook's path is its credential.
_SLACK_HOOK = re.compile(r"(?P<head>://hooks\.slack\.com/)[^\s?#\"']+", re.IGNORECASE)


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """Return `text` with every occurrence of each non-empty secret replaced by `***`."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_url(text: str) -> str:
    """`text` with the credentials of every URL in it as `***`.

    That is the password of a URL's user part (`redis://:***@host`,
    `amqp://user:***@host`), every query parameter whose name says it holds a
    credential (`?token=***`, `&X-Amz-Signature=***`) and the path of a Slack
    webhook. A user name, a host and every other part are kept, so the URL can
    still be told apart from others. Works on one URL or on any text holding URLs.
    """
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
        text = _SLACK_HOOK.sub(rf"\g<head>{MASK}", text)
    if "=" in text:
        text = _QUERY_CREDENTIAL.sub(rf"\g<head>{MASK}", text)
    return text


def excerpt(text: str, secrets: Iterable[str | None], limit: int = 200) -> str:
    """A short, masked, single-line excerpt of a body for error messages."""
    flat = " ".join(mask(text, secrets).split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
