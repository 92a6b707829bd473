"""`absorb-bridge demo`: a simulated tenant with live activity, swept and diffed as it changes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import datetime, timedelta

from aiohttp import web

from bridge.absorb.client import AbsorbClient
from bridge.absorb.filters import field, sort
from bridge.absorb.models import CourseEnrollment, Status
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig

_CREDENTIALS = Credentials(api_key="demo-key", username="demo-admin", password="demo-password")
_SWEEP_INTERVAL_S = 1.0
_LOOKBACK = timedelta(seconds=5)
_COLOURS = {
    Status.Complete: "\033[32m",
    Status.Failed: "\033[31m",
    Status.InProgress: "\033[33m",
}


class _Watcher:
    """Sweeps every course by `dateEdited` and prints each status transition it finds."""

    def __init__(self, client: AbsorbClient, courses: dict[str, str], colour: bool) -> None:
        self.client = client
        self.courses = courses
        self.colour = colour
        self.statuses: dict[str, Status | None] = {}
        self.watermarks: dict[str, datetime] = {}
        self.counts: dict[str, int] = {}

    async def sweep(self) -> None:
        """One pass over every course; the first pass only records what is there."""
        for course_id in self.courses:
            await self._sweep_course(course_id)

    async def _sweep_course(self, course_id: str) -> None:
        since = self.watermarks.get(course_id)
        baseline = since is None
        query = str(field("dateEdited").ge(since - _LOOKBACK)) if since else None
        async for ce in self.client.list_course_enrollments(
            course_id, filter=query, sort=sort("dateEdited", "id")
        ):
            if not baseline:
                self._diff(ce)
            self.statuses[ce.id] = ce.status
            if ce.date_edited and (since is None or ce.date_edited > since):
                since = ce.date_edited
        if since is not None:
            self.watermarks[course_id] = since

    def _diff(self, ce: CourseEnrollment) -> None:
        known = ce.id in self.statuses
        before = self.statuses.get(ce.id)
        if known and before == ce.status:
            return
        change = "status_changed" if known else "created"
        self.counts[change] = self.counts.get(change, 0) + 1
        self._print(ce, before if known else None, change)

    def _print(self, ce: CourseEnrollment, before: Status | None, change: str) -> None:
        new = ce.status.name if ce.status is not None else "?"
        old = before.name if before is not None else "(new)"
        when = ce.date_edited.strftime("%H:%M:%S") if ce.date_edited else "--:--:--"
        score = f"  score {ce.score:g}" if ce.score is not None else ""
        course = self.courses.get(ce.course_id or "", ce.course_name or "?")[:30]
        colour = _COLOURS.get(ce.status) if self.colour and ce.status else None
        arrow = f"{old:>16} -> {new}"
        if colour:
            arrow = f"{old:>16} -> {colour}{new}\033[0m"
        print(f"{when}  {ce.full_name or '?':<22} {course:<30} {arrow}{score}", flush=True)


async def run_demo(duration_s: float | None) -> int:
    """Run the demo until `duration_s` passes or Ctrl-C; returns the exit code."""
    sim = Simulator(
        SimulatorConfig(
            api_key=_CREDENTIALS.api_key,
            username=_CREDENTIALS.username,
            password=_CREDENTIALS.password,
            tenant=TenantSpec(seed=42, users=60, courses=6),
            activity_per_second=6.0,
        )
    )
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = AbsorbClient(AbsorbTransport(url, _CREDENTIALS), page_size=200)
    try:
        courses = {c.id: c.name or c.id async for c in client.list_courses()}
        print(
            f"absorb-bridge demo: simulated Absorb tenant at {url} with "
            f"{len(sim.tenant.users)} learners, {len(courses)} courses and live activity.\n"
            "Every course is swept by dateEdited each second; snapshots are held in memory "
            "for the demo. Ctrl-C stops.\n",
            flush=True,
        )
        watcher = _Watcher(client, courses, colour=sys.stdout.isatty())
        await watcher.sweep()
        print(f"baseline: {len(watcher.statuses)} enrollments recorded; watching for changes…\n")
        deadline = loop.time() + duration_s if duration_s else None
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _SWEEP_INTERVAL_S)
            await watcher.sweep()
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(watcher.counts.items()))
        print(f"\nstopped: {summary or 'no changes seen'}.")
    finally:
        await client.close()
        await runner.cleanup()
    return 0
