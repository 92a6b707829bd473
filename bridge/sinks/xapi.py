"""The `xapi` sink: each event as xAPI statements in a Learning Record Store.

Statements are built and checked by `bridge.xapi` before anything is sent. One
event's statements go with `PUT statements?statementId=…` each, a batch of events
with one `POST statements`. Their ids are deterministic, so a redelivered event
lands on the statements it made before: the LRS answers 204 (or 409, which counts
as delivered once the stored statement is read back and found the same).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
from yarl import URL

from bridge import clock
from bridge.config import XapiSinkConfig
from bridge.retry import parse_retry_after
from bridge.sinks.base import Delivery, SinkError, answered, redirected
from bridge.sinks.session import http_session
from bridge.xapi import MappingError, Portal, statements_for
from bridge.xapi.compare import first_difference

Body = dict[str, Any]


class XapiSink:
    """Puts each event's statements in an LRS; 2xx, or a 409 for the same statement, is delivered.

    A statement the mapping cannot make, a 400 (the LRS rejects the statement) and a
    409 for a different statement are permanent: that event goes to the dead letters
    at once. 410 disables the sink; anything else is retried, honouring Retry-After.
    """

    def __init__(
        self, config: XapiSinkConfig, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.name = config.name
        self.last_reply = ""
        self.config = config
        self._session = session
        self._owns_session = session is None
        self._statements_url = URL(config.endpoint + "statements")
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._headers = {
            "X-Experience-API-Version": config.x_experience_api_version,
            "Content-Type": "application/json",
            **_auth_header(config),
        }
        self._secrets = [
            s.get_secret_value() for s in (config.password, config.bearer_token) if s is not None
        ]
        self._portals: dict[str, Portal] = {}

    async def start(self) -> None:
        """Open the HTTP session."""
        if self._session is None:
            self._session = http_session(
                tls_verify=self.config.tls_verify, max_in_flight=self.config.max_in_flight
            )

    async def close(self) -> None:
        """Close the session if the sink opened it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def statements(self, delivery: Delivery) -> list[Body]:
        """The statements of one event; a permanent SinkError when it cannot make valid ones."""
        source = str(delivery.event.get("source", ""))
        portal = self._portals.get(source)
        if portal is None:
            portal = Portal(
                self.config.portal or source, actor=self.config.actor, language=self.config.language
            )
            self._portals[source] = portal
        try:
            return statements_for(delivery.event, delivery.course_id, portal)
        except MappingError as e:
            raise SinkError(self.name, f"no valid xAPI statement: {e}", permanent=True) from None

    async def send(self, delivery: Delivery) -> None:
        """PUT the event's statements one by one, in order; raise SinkError unless all landed."""
        bodies = self.statements(delivery)
        if not bodies:
            self.last_reply = "no statement: the mapping table gives this event no verb"
        for statement in bodies:
            await self._put(statement)

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[SinkError | None]:
        """Deliver events `batch_size` at a time, one POST per batch; one outcome per event.

        A batch the LRS refuses as a whole (a 400 or 409 names no statement) is sent
        again statement by statement, so one bad event never holds back the rest.
        """
        size = self.config.batch_size
        chunks = [deliveries[i : i + size] for i in range(0, len(deliveries), size)]
        gate = asyncio.Semaphore(self.config.max_in_flight)

        async def one(chunk: Sequence[Delivery]) -> list[SinkError | None]:
            async with gate:
                return await self._send_chunk(chunk)

        outcomes: list[SinkError | None] = []
        for found in await asyncio.gather(*(one(c) for c in chunks)):
            outcomes += found
        return outcomes

    async def _send_chunk(self, chunk: Sequence[Delivery]) -> list[SinkError | None]:
        outcomes: list[SinkError | None] = [None] * len(chunk)
        bodies: list[Body] = []
        for i, delivery in enumerate(chunk):
            try:
                bodies += self.statements(delivery)
            except SinkError as e:
                outcomes[i] = e
        if len(chunk) == 1 or self.config.batch_size == 1 or not bodies:
            return [o or await self._one(d) for o, d in zip(outcomes, chunk, strict=True)]
        try:
            await self._post(bodies)
        except SinkError as e:
            if not e.permanent:
                return [o or e for o in outcomes]
            return [o or await self._one(d) for o, d in zip(outcomes, chunk, strict=True)]
        return outcomes

    async def _one(self, delivery: Delivery) -> SinkError | None:
        try:
            await self.send(delivery)
        except SinkError as e:
            return e
        return None

    async def _post(self, bodies: list[Body]) -> None:
        status, headers, answer = await self._request("POST", self._statements_url, bodies)
        self._judge(status, headers, answer, f"a batch of {len(bodies)} statements")

    async def _put(self, statement: Body) -> None:
        statement_id = str(statement["id"])
        url = self._statements_url.with_query(statementId=statement_id)
        status, headers, answer = await self._request("PUT", url, statement)
        if status == 409:
            await self._same_as_stored(statement)
            return
        self._judge(status, headers, answer, f"statement {statement_id}")

    async def _request(self, method: str, url: URL, body: Any) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            await self.start()
        assert self._session is not None
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as reply:
                answer = await reply.read()
                wanted = ("Retry-After", "Location")
                headers = {k: reply.headers[k] for k in wanted if k in reply.headers}
                self.last_reply = answered(reply.status, answer, self._secrets)
                return reply.status, headers, answer
        except TimeoutError:
            raise SinkError(self.name, f"no answer within {self.config.timeout_s:g}s") from None
        except aiohttp.ClientError as e:
            raise SinkError(self.name, f"cannot reach the LRS: {type(e).__name__}") from None

    def _judge(self, status: int, headers: dict[str, str], answer: bytes, what: str) -> None:
        """Return if the LRS took `what`, else raise the SinkError its answer means."""
        if 200 <= status < 300:
            return
        reply = answered(status, answer, self._secrets)
        if status == 410:
            raise SinkError(self.name, "the LRS answered 410 Gone", gone=True)
        if 300 <= status < 400:
            raise SinkError(self.name, redirected(status, headers.get("Location"), self._secrets))
        if status in (400, 409):
            # The LRS refuses this statement as it is: sending it again cannot help.
            raise SinkError(self.name, f"the LRS refused {what}: {reply}", permanent=True)
        wait = parse_retry_after(headers.get("Retry-After"), clock.now())
        raise SinkError(self.name, f"the LRS answered {reply} for {what}", retry_after_s=wait)

    async def _same_as_stored(self, statement: Body) -> None:
        """A 409: delivered if the LRS holds this very statement, else an error naming the clash."""
        statement_id = str(statement["id"])
        url = self._statements_url.with_query(statementId=statement_id)
        status, headers, answer = await self._request("GET", url, None)
        self._judge(status, headers, answer, f"reading back statement {statement_id}")
        try:
            stored = json.loads(answer)
        except ValueError:
            raise SinkError(
                self.name, f"statement {statement_id}: the LRS's copy is not JSON"
            ) from None
        # Some LRSs answer a single-statement query with a StatementResult.
        if isinstance(stored, dict) and isinstance(stored.get("statements"), list):
            stored = next((s for s in stored["statements"] if s.get("id") == statement_id), None)
        difference = first_difference(statement, stored)
        if difference is not None:
            raise SinkError(
                self.name,
                f"conflict: the LRS holds a different statement {statement_id} ({difference})",
                permanent=True,
            )
        self.last_reply = f"HTTP 409: statement {statement_id} is already stored, identical"


def _auth_header(config: XapiSinkConfig) -> dict[str, str]:
    if config.bearer_token is not None:
        return {"Authorization": f"Bearer {config.bearer_token.get_secret_value()}"}
    if config.username is not None and config.password is not None:
        pair = f"{config.username}:{config.password.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}
