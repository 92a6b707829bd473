"""Absorb-style webhooks for the simulator's own changes: lean signed JSON bodies naming ids.

Set through the control API (`PUT /_sim/webhooks`): where to post and the secret;
which change kinds (and, optionally, which new statuses) are announced; the share
announced; delay, loss and duplicates; and the body shapes, used in turn. Bodies
are signed as Absorb signs them (`absorb-signature`: hex HMAC-SHA256 of the raw
body keyed with the secret). Announcing only queues a notice; a background sender
posts it, so the simulator's request handling never waits on a receiver.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
import structlog
from pydantic import BaseModel, Field

from bridge.absorb.models import Status
from bridge.notices.signature import HEADER, sign
from bridge.simulator.tenant import Change, Tenant

log = structlog.get_logger(__name__)

Shape = Literal["course", "user", "enrollment", "nested", "array", "odd_case", "nothing"]
#: Notices waiting to be sent; beyond it the simulator drops them (counted as lost).
QUEUE_SIZE = 10_000


def _course_shape() -> list[Shape]:
    return ["course"]


class WebhookSettings(BaseModel):
    """What the simulator announces, and how faithfully."""

    url: str | None = None
    secret: str = ""
    kinds: list[str] = Field(default_factory=lambda: ["course_enrollment"])
    statuses: list[int] | None = None
    share: float = Field(1.0, ge=0, le=1)
    delay_s: float = Field(0.0, ge=0, le=3600)
    loss: float = Field(0.0, ge=0, le=1)
    duplicates: float = Field(0.0, ge=0, le=1)
    shapes: list[Shape] = Field(default_factory=_course_shape, min_length=1)
    timeout_s: float = Field(5.0, gt=0)


def _event_name(change: Change) -> str:
    if change.status is None:
        return "EnrollmentDeleted"
    if change.status == Status.Complete:
        return "EnrollmentCompletedbyAdmin"
    return "EnrollmentStatusChanged"


_BODIES: dict[Shape, Callable[[str, str, str, str], dict[str, Any]]] = {
    "course": lambda e, c, u, n: {"eventName": n, "courseId": c, "userId": u},
    "user": lambda e, c, u, n: {"eventName": n, "userId": u},
    "enrollment": lambda e, c, u, n: {"eventName": n, "enrollmentId": e},
    "nested": lambda e, c, u, n: {"EventName": n, "Data": {"Course": {"Id": c}, "User": {"Id": u}}},
    "array": lambda e, c, u, n: {"event": n, "items": [{"course_id": c, "user_id": u}]},
    "odd_case": lambda e, c, u, n: {"EVENT_NAME": n, "Course.Id": c.upper(), "USERID": u},
    "nothing": lambda e, c, u, n: {"eventName": n, "portal": "simulated", "ids": [c, u]},
}


class Announcer:
    """Turns the tenant's changes into queued notices and posts them in the background."""

    def __init__(self, tenant: Tenant, rng: random.Random) -> None:
        self.tenant = tenant
        self.rng = rng
        self.settings = WebhookSettings()
        self.counts = {"announced": 0, "sent": 0, "failed": 0, "lost": 0, "duplicated": 0}
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_SIZE)
        self._turn = 0
        tenant.on_change = self.offer

    def offer(self, change: Change) -> None:
        """Announce a change if the settings say so (called as the change happens)."""
        s = self.settings
        if s.url is None or change.kind not in s.kinds:
            return
        if s.statuses is not None and change.status not in s.statuses:
            return
        if self.rng.random() >= s.share:
            return
        ce = self.tenant.enrollments.get(change.enrollment_id)
        if ce is None:
            return
        shape = s.shapes[self._turn % len(s.shapes)]
        self._turn += 1
        body = _BODIES[shape](ce.id, ce.course.id, ce.user.id, _event_name(change))
        self.counts["announced"] += 1
        if self.rng.random() < s.loss:
            self.counts["lost"] += 1
            return
        copies = 2 if self.rng.random() < s.duplicates else 1
        self.counts["duplicated"] += copies - 1
        for _ in range(copies):
            self.queue(body)

    def queue(self, body: Any) -> None:
        """Queue a notice with this body, to go after the configured delay."""
        raw = json.dumps(body).encode()
        try:
            self._queue.put_nowait((time.monotonic() + self.settings.delay_s, raw))
        except asyncio.QueueFull:
            self.counts["lost"] += 1

    def pending(self) -> int:
        """Notices queued and not yet sent."""
        return self._queue.qsize()

    async def run(self) -> None:
        """Send queued notices in order, each when its delay is up, until cancelled."""
        async with aiohttp.ClientSession() as http:
            while True:
                due, raw = await self._queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self._send(http, raw)

    async def _send(self, http: aiohttp.ClientSession, raw: bytes) -> None:
        s = self.settings
        if s.url is None:
            return
        headers = {HEADER: sign(raw, s.secret), "Content-Type": "application/json"}
        try:
            timeout = aiohttp.ClientTimeout(total=s.timeout_s)
            async with http.post(s.url, data=raw, headers=headers, timeout=timeout) as resp:
                ok = 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("sim.webhook_failed", error=str(e)[:200])
            ok = False
        self.counts["sent" if ok else "failed"] += 1
