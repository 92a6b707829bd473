"""The `http` sink: CloudEvents over HTTP POST, signed the Standard Webhooks way."""

from __future__ import annotations

import base64
import json

import aiohttp
from yarl import URL

from bridge import clock
from bridge.config import HttpSinkConfig
from bridge.retry import parse_retry_after
from bridge.sinks import templates
from bridge.sinks.base import Delivery, SinkError, answered, redirected
from bridge.sinks.session import http_session
from bridge.sinks.signing import Signer

STRUCTURED = "application/cloudevents+json"


class HttpSink:
    """Posts each event to a URL; any 2xx is delivered, 410 disables the sink, the rest retry."""

    def __init__(
        self, config: HttpSinkConfig, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.name = config.name
        self.last_reply = ""
        self.config = config
        self._session = session
        self._owns_session = session is None
        self._signer = Signer(s.get_secret_value() for s in config.signing_secrets())
        self._template: templates.BodyTemplate | None = None
        # Built once: parsing the URL and making a timeout per request is measurable.
        self._url = URL(config.url)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._headers = {**config.headers, **_auth_header(config)}
        self._secrets = _secrets(config)

    async def start(self) -> None:
        """Open the HTTP session and load the body template, if any."""
        if self._session is None:
            self._session = http_session(
                tls_verify=self.config.tls_verify, max_in_flight=self.config.max_in_flight
            )
        if self.config.template is not None and self._template is None:
            self._template = templates.load(self.name, self.config.template)

    async def close(self) -> None:
        """Close the session if the sink opened it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def request(self, delivery: Delivery) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one attempt (signed with this attempt's timestamp)."""
        headers: dict[str, str] = {}
        if self._template is not None:
            event = delivery.event
            data = event.get("data") or {}
            current = data.get("current") or {}
            text = self._template.render(delivery.id, event=event, current=current, data=data)
            headers["Content-Type"] = "application/json"
        elif self.config.mode == "binary":
            event = delivery.event
            text = json.dumps(event.get("data"), separators=(",", ":"))
            headers["Content-Type"] = str(event.get("datacontenttype", "application/json"))
            for key, value in event.items():
                if key not in ("data", "datacontenttype") and value is not None:
                    headers[f"ce-{key}"] = str(value)
        else:
            text = delivery.body
            headers["Content-Type"] = STRUCTURED
        body = text.encode()
        timestamp = int(clock.now().timestamp())
        headers["webhook-id"] = delivery.id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = self._signer.header(delivery.id, timestamp, body)
        headers.update(self._headers)
        return body, headers

    async def send(self, delivery: Delivery) -> None:
        """POST the event; raise SinkError unless the receiver answered 2xx in time."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        body, headers = self.request(delivery)
        try:
            # Never followed: aiohttp would re-send the event as a body-less GET to the
            # Location and call that delivered, and the signed body belongs to this URL only.
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as reply:
                status = reply.status
                retry_after = reply.headers.get("Retry-After")
                location = reply.headers.get("Location")
                answer = await reply.read()
        except TimeoutError:
            raise SinkError(self.name, f"no answer within {self.config.timeout_s:g}s") from None
        except aiohttp.ClientError as e:
            raise SinkError(self.name, f"cannot reach the receiver: {type(e).__name__}") from None
        self.last_reply = answered(status, answer, self._secrets)
        if 200 <= status < 300:
            return
        if status == 410:
            raise SinkError(self.name, "the receiver answered 410 Gone", gone=True)
        if 300 <= status < 400:
            raise SinkError(self.name, redirected(status, location, self._secrets))
        wait = parse_retry_after(retry_after, clock.now())
        raise SinkError(self.name, f"the receiver answered HTTP {status}", retry_after_s=wait)


def _auth_header(config: HttpSinkConfig) -> dict[str, str]:
    """The Authorization header the config asks for, if any."""
    if config.bearer_token is not None:
        return {"Authorization": f"Bearer {config.bearer_token.get_secret_value()}"}
    if config.basic_auth is not None:
        auth = config.basic_auth
        pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


def _secrets(config: HttpSinkConfig) -> list[str]:
    """What a receiver might echo back in a Location: the credentials this sink sends."""
    found = [s.get_secret_value() for s in config.signing_secrets()]
    if config.bearer_token is not None:
        found.append(config.bearer_token.get_secret_value())
    if config.basic_auth is not None:
        found.append(config.basic_auth.password.get_secret_value())
    url = URL(config.url)
    # Long query values only: masking a `v=2` would garble every Location with a 2 in it.
    found += [url.password or "", *(v for v in url.query.values() if len(v) >= 8)]
    return [s for s in found if s]
