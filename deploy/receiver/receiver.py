"""An example webhook receiver for absorb-bridge's `http` sink: verifies each delivery's
Standard Webhooks signature, prints the CloudEvent, and answers 204.

    WEBHOOK_SECRET=whsec_... PORT=8080 python receiver.py

Consumers de-duplicate on `webhook-id` (the event id): delivery is at least once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

from aiohttp import web

TOLERANCE_S = 300  # Standard Webhooks: refuse timestamps further than 5 minutes off


def verify(secret: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    """Whether one of the `v1,` signatures is the HMAC of `{id}.{timestamp}.{body}`."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    signatures = headers.get("webhook-signature", "").split()
    return any(
        hmac.compare_digest(s.removeprefix("v1,"), expected)
        for s in signatures
        if s.startswith("v1,")
    )


def app(secret: str) -> web.Application:
    """The receiver: `POST /hooks` for deliveries, `GET /healthz` for the healthcheck."""
    seen: dict[str, None] = {}  # recent ids, oldest first, to drop redeliveries

    async def hooks(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not verify(secret, headers, body, time.time()):
            return web.Response(status=401, text="bad or missing signature\n")
        msg_id = headers["webhook-id"]
        if msg_id in seen:
            return web.Response(status=204)
        seen[msg_id] = None
        if len(seen) > 10_000:
            del seen[next(iter(seen))]
        print(body.decode("utf-8", "replace"), flush=True)
        return web.Response(status=204)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    application = web.Application()
    application.router.add_post("/hooks", hooks)
    application.router.add_get("/healthz", healthz)
    return application


if __name__ == "__main__":
    web.run_app(app(os.environ["WEBHOOK_SECRET"]), port=int(os.environ.get("PORT", "8080")))
