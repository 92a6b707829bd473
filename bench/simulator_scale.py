"""How large a tenant the simulator holds, and how fast it serves pages of 1000.

    .venv/bin/python bench/simulator_scale.py                 # one million enrollments
    .venv/bin/python bench/simulator_scale.py --users 20000   # a smaller run

Prints generation time, resident memory, and pages of 1000 served per second
through the real client over loopback HTTP, for a `dateEdited` sweep of several
courses (filtered and sorted, as the bridge asks).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from datetime import timedelta

from aiohttp import web

from bridge.absorb.client import AbsorbClient
from bridge.absorb.filters import field, sort
from bridge.absorb.paths import Op
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.simulator.faults import Faults
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig

CREDENTIALS = Credentials(api_key="bench", username="bench", password="bench")


def rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(args: argparse.Namespace) -> None:
    spec = TenantSpec(
        seed=1,
        users=args.users,
        courses=args.courses,
        enrollment_ratio=args.ratio,
        chapters_per_course=1,
        lessons_per_chapter=args.lessons,
    )
    started = time.perf_counter()
    sim = Simulator(
        SimulatorConfig(
            api_key=CREDENTIALS.api_key,
            username=CREDENTIALS.username,
            password=CREDENTIALS.password,
            tenant=spec,
            faults=Faults(rate_limit_per_s=None),
        )
    )
    generated_s = time.perf_counter() - started
    t = sim.tenant
    print(
        f"tenant: {len(t.enrollments):,} course enrollments, {len(t.lesson_enrollments):,} lesson"
    )
    print(f"  enrollments, {len(t.attempts):,} attempts; generated in {generated_s:.1f} s;")
    print(f"  peak RSS {rss_mb():,.0f} MiB")

    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    transport = AbsorbTransport(
        f"http://127.0.0.1:{port}", CREDENTIALS, max_requests_per_second=1e6
    )
    async with AbsorbClient(transport, page_size=1000) as client:
        since = sim.clock.now() - timedelta(days=365)
        query, order = str(field("dateEdited").ge(since)), sort("dateEdited", "id")
        courses = list(t.courses)[: args.sweep_courses]
        records = pages = 0
        started = time.perf_counter()
        for course in courses:
            async for page in client.pages(
                Op.LIST_COURSE_ENROLLMENTS,
                "enrollments",
                {"course_id": course},
                {"_filter": query, "_sort": order},
            ):
                pages += 1
                records += len(page.items)
        elapsed = time.perf_counter() - started
    await runner.cleanup()
    print(f"sweep of {len(courses)} courses: {pages} pages of up to 1000, {records:,} records")
    print(
        f"  in {elapsed:.2f} s: {pages / elapsed:.1f} pages/s, {records / elapsed:,.0f} records/s"
    )
    print(f"  ({1000 * elapsed / pages:.1f} ms a page, parse included)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--courses", type=int, default=100)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--lessons", type=int, default=1)
    parser.add_argument("--sweep-courses", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
