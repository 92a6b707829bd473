"""The `sqs` sink: each event a message on an Amazon SQS queue, FIFO queues grouped by subject.

The body is the CloudEvent in structured mode (`application/cloudevents+json`);
its attributes are repeated as String message attributes (`ce-id`, `ce-type`,
...) so consumers can filter without parsing the body. On a FIFO queue the
message group is the event's subject (one enrollment's events stay in order)
and the deduplication id is the event id (a re-sent event within SQS's
five-minute window is dropped by SQS itself).
"""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from bridge.config import SqsSinkConfig
from bridge.redaction import mask, mask_url
from bridge.sinks.base import Delivery, SinkError

STRUCTURED = "application/cloudevents+json"
#: The CloudEvents attributes copied to message attributes (SQS allows ten at most).
ATTRIBUTES = ("id", "type", "source", "subject", "specversion", "time", "status", "previousstatus")
#: A throttled send is tried again after at least this long.
THROTTLED_RETRY_S = 1.0
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0

_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_REFUSED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
_REGION = re.compile(r"^(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:queue\.)?amazonaws\.com", re.I)


class SqsSink:
    """Sends each event with `SendMessage`; delivered once SQS answered with a MessageId.

    Credentials are the config's key pair when given, else botocore's usual chain
    (environment, shared files, instance or task role). botocore's own retries are
    off: the delivery worker owns retrying, on the sink's schedule.
    """

    def __init__(self, config: SqsSinkConfig) -> None:
        self.name = config.name
        self.last_reply = ""
        self.config = config
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._errors: tuple[type[Exception], ...] = ()
        secret = config.secret_access_key
        self._secrets = [secret.get_secret_value()] if secret is not None else []

    async def start(self) -> None:
        """Import aiobotocore and open the SQS client."""
        if self._client is not None:
            return
        try:
            # aiobotocore and botocore ship no type hints.
            from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
            from aiobotocore.httpsession import AIOHTTPSession  # type: ignore[import-untyped]
            from aiobotocore.session import get_session  # type: ignore[import-untyped]
            from botocore.exceptions import (  # type: ignore[import-untyped]
                BotoCoreError,
                ClientError,
            )
        except ImportError:
            raise SinkError(
                self.name, "the sqs sink needs aiobotocore: pip install 'absorb-bridge[sqs]'"
            ) from None
        if not hasattr(AIOHTTPSession, "_get_session"):
            raise SinkError(
                self.name, "this aiobotocore cannot turn redirects off: install aiobotocore>=2.13"
            )
        self._errors = (BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)
        config = self.config
        credentials: dict[str, str] = {}
        if config.access_key_id is not None and config.secret_access_key is not None:
            credentials = {
                "aws_access_key_id": config.access_key_id,
                "aws_secret_access_key": config.secret_access_key.get_secret_value(),
            }
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                get_session().create_client(
                    "sqs",
                    region_name=config.region or queue_region(config.queue_url),
                    endpoint_url=config.endpoint_url,
                    config=AioConfig(
                        connect_timeout=CONNECT_TIMEOUT_S,
                        read_timeout=READ_TIMEOUT_S,
                        retries={"mode": "standard", "total_max_attempts": 1},
                        http_session_cls=_no_redirects(AIOHTTPSession),
                    ),
                    **credentials,
                )
            )
        except self._errors as e:
            await stack.aclose()
            raise SinkError(self.name, f"cannot open the SQS client: {self._explain(e)}") from None
        self._stack = stack

    async def send(self, delivery: Delivery) -> None:
        """Send the event; raise SinkError unless SQS accepted it."""
        if self._client is None:
            await self.start()
        request: dict[str, Any] = {
            "QueueUrl": self.config.queue_url,
            "MessageBody": delivery.body,
            "MessageAttributes": message_attributes(delivery.event),
        }
        if self.config.fifo:
            request["MessageGroupId"] = str(delivery.event.get("subject") or delivery.id)
            request["MessageDeduplicationId"] = delivery.id
        try:
            reply = await self._client.send_message(**request)
        except self._errors as e:
            raise SinkError(
                self.name, self._explain(e), retry_after_s=self._retry_after_s(e)
            ) from None
        if not reply.get("MessageId"):
            raise SinkError(self.name, "SQS answered without a MessageId")
        self.last_reply = f"accepted by SQS as message {reply['MessageId']}"

    async def close(self) -> None:
        """Close the SQS client."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _explain(self, error: Exception) -> str:
        code, message = _error_code(error), ""
        metadata = getattr(error, "response", {}).get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode")
        if isinstance(status, int) and 300 <= status < 400:
            location = metadata.get("HTTPHeaders", {}).get("location") or "nowhere"
            message = (
                f"HTTP {status} redirecting to {mask_url(location)}: "
                "redirects are never followed, check queue_url and endpoint_url"
            )
        elif code in _NO_QUEUE:
            message = "the queue does not exist: check queue_url and region"
        elif code in _REFUSED:
            message = (
                f"AWS refused the request ({code}): check the credentials "
                "and that they may sqs:SendMessage to the queue"
            )
        elif type(error).__name__ == "NoRegionError":
            message = "no AWS region: set the sink's region (or AWS_DEFAULT_REGION)"
        elif type(error).__name__ == "NoCredentialsError":
            message = "no AWS credentials: set access_key_id and secret_access_key, or use a role"
        elif code:
            detail = getattr(error, "response", {}).get("Error", {}).get("Message", "")
            message = f"SQS answered {code}" + (f": {detail}" if detail else "")
        else:
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        # botocore never echoes the secret key; masking keeps it that way whatever it says.
        return mask(message, self._secrets)

    def _retry_after_s(self, error: Exception) -> float | None:
        status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        throttled = _error_code(error) in _THROTTLING or status == 429
        return THROTTLED_RETRY_S if throttled else None


def _no_redirects(session_cls: type[Any]) -> type[Any]:
    """aiobotocore's HTTP session with aiohttp's redirect following turned off.

    aiohttp follows redirects by default, which would re-send a message (or a
    body-less GET) to whatever a 3xx names. With this session a 3xx reaches
    botocore as the answer, so the try fails and the Location is reported.
    """

    class NoRedirects:
        def __init__(self, session: aiohttp.ClientSession) -> None:
            self._session = session

        def request(self, *args: Any, **kwargs: Any) -> Any:
            return self._session.request(*args, allow_redirects=False, **kwargs)

    class NoRedirectSession(session_cls):  # type: ignore[misc]
        async def _get_session(self, proxy_url: str | None) -> NoRedirects:
            return NoRedirects(await super()._get_session(proxy_url))

    return NoRedirectSession


def message_attributes(event: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The event's CloudEvents attributes as SQS String message attributes (empty ones left out)."""
    attributes = {
        f"ce-{key}": {"DataType": "String", "StringValue": str(event[key])}
        for key in ATTRIBUTES
        if event.get(key) not in (None, "")
    }
    attributes["content-type"] = {"DataType": "String", "StringValue": STRUCTURED}
    return attributes


def queue_region(queue_url: str) -> str | None:
    """The AWS region a queue URL names (`https://sqs.eu-west-1.amazonaws.com/...`), or None."""
    host = queue_url.split("://", 1)[-1].split("/", 1)[0]
    found = _REGION.match(host)
    return found.group(1).lower() if found else None


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code") or "")
