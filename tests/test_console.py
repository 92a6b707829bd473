"""The operator's console in a real browser (Debian's chromium driven by Playwright), against
a real `run` process, the simulator over HTTP, real Redis and a receiver that checks
signatures. The bridge's state is built once for the module: two status changes that
a failing receiver dead-letters, and one record Absorb sends unreadable. Each page
visited is saved as a screenshot (to build/console/, or to ABSORB_BRIDGE_SCREENSHOTS) and
searched for secrets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from bridge.absorb.models import Status
from bridge.commands.report import collect
from bridge.commands.wiring import connect, load
from bridge.config import Config
from bridge.delivery import DeliveryQueue
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig
from tests.conftest import API_KEY, PASSWORD, USERNAME, SimHandle, free_port, until
from tests.receivers import Receiver, serve
from tests.test_commands import BRIDGE, ENV

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots go to build/ (ignored by git); ABSORB_BRIDGE_SCREENSHOTS=docs/console renews
# the README's.
SHOTS = Path(
    os.environ.get(
        "ABSORB_BRIDGE_SCREENSHOTS", Path(__file__).resolve().parent.parent / "build" / "console"
    )
).resolve()
TOKEN = "console-" + secrets.token_hex(12)
SECRET = "whsec_" + base64.b64encode(b"console-receiver-secret").decode()
HOOK_SECRET = "absorb-hook-" + secrets.token_hex(8)
HOSTILE = "<b>bold</b><script>alert(1)</script>"
CONSOLE_ENV = {**ENV, "TEST_CONSOLE_TOKEN": TOKEN, "TEST_HOOK_SECRET": HOOK_SECRET}
EVERY_SECRET = (API_KEY, PASSWORD, TOKEN, SECRET, HOOK_SECRET)


@dataclass
class World:
    """The running bridge with its console, and what was done to it."""

    base: str
    config_path: str
    config: Config
    hooks_url: str
    sim: SimHandle
    receiver: Receiver
    failing: dict[str, bool]
    quarantined_id: str
    changed_ids: list[str]


def _write_config(
    tmp: Path, sim_url: str, redis_url: str, receiver_url: str, port: int, hooks_port: int
) -> Path:
    (tmp / "password").write_text(PASSWORD + "\n")
    path = tmp / "bridge.yaml"
    path.write_text(
        f"""
absorb:
  base_url: {sim_url}
  api_key: ${{TEST_ABSORB_KEY}}
  username: {USERNAME}
  password_file: {tmp / "password"}
  max_requests_per_second: 200
  webhooks:
    listen: 127.0.0.1:{hooks_port}
    secret: ${{TEST_HOOK_SECRET}}
redis:
  url: {redis_url}
  prefix: console-{secrets.token_hex(4)}
http:
  listen: 127.0.0.1:{port}
console:
  enabled: true
  token: ${{TEST_CONSOLE_TOKEN}}
feeds:
  - name: courses
    resource: course_enrollments
    interval: 1s
    max_interval: 2s
    lookback: 2s
sinks:
  - name: hr
    type: http
    url: {receiver_url}
    secret: {SECRET}
    retry_schedule: [100ms]
  - name: audit
    type: file
    path: {tmp / "events.jsonl"}
routes:
  - sinks: [hr]
    types: [absorb.course_enrollment.status_changed]
  - sinks: [audit]
"""
    )
    return path


async def _report(config: Config) -> dict[str, Any]:
    """The status report, read now by the code `status --json` runs."""
    async with connect(config) as parts:
        return await collect(config, parts)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """A `run` process with the console on, baselined, then two changes dead-lettered at a
    failing receiver and one unreadable record quarantined; quiet once that is done."""
    tmp = tmp_path_factory.mktemp("console")
    sim = Simulator(
        SimulatorConfig(
            api_key=API_KEY,
            username=USERNAME,
            password=PASSWORD,
            tenant=TenantSpec(users=12, courses=2, seed=11),
        )
    )
    sim_runner, sim_url = await serve(sim.app())
    http = aiohttp.ClientSession()
    handle = SimHandle(sim_url, sim, http)
    failing = {"on": False}
    receiver = Receiver([SECRET])

    async def behaviour(_n: int, _request: web.Request) -> int | None:
        return 500 if failing["on"] else None

    receiver.behaviour = behaviour
    port, hooks_port = free_port(), free_port()
    path = _write_config(tmp, sim_url, redis_url, await receiver.start(), port, hooks_port)
    config = load("test", str(path), CONSOLE_ENV)
    assert isinstance(config, Config)
    with (tmp / "run.log").open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            *BRIDGE, "run", "--config", str(path), env=CONSOLE_ENV, stdout=log, stderr=log
        )
    try:

        async def baselined() -> bool:
            scopes = (await _report(config))["feeds"][0]["scopes"]
            return len(scopes) == 2 and all(s["swept_at"] for s in scopes)

        await until(baselined, "both scopes to be baselined", timeout_s=30)
        hooks_url = f"http://127.0.0.1:{hooks_port}/absorb/webhooks"
        async with http.post(hooks_url, json={"unsigned": True}) as refused:
            assert refused.status == 401
        failing["on"] = True
        records = list(sim.tenant.enrollments.values())
        bad, changed = records[0], records[1:3]
        await handle.control(
            "PATCH", f"records/{bad.id}", {"set": {"progress": 50}, "raw": {"status": HOSTILE}}
        )
        for rec in changed:
            new = Status.Failed if rec.status != Status.Failed else Status.InProgress
            await handle.control("PATCH", f"records/{rec.id}", {"set": {"status": int(new)}})

        async def settled() -> bool:
            report = await _report(config)
            hr = report["sinks"][0]
            return (
                hr["dead_lettered"] == 2
                and hr["backlog"] == hr["queued"] == hr["retrying"] == 0
                and len(report["feeds"][0]["quarantined"]) == 1
                and report["sinks"][1]["backlog"] == 0
                and report["notices"]["refused"] == 1
            )

        await until(
            settled, "two dead letters, a quarantined record, a refused notice", timeout_s=60
        )
        yield World(
            base=f"http://127.0.0.1:{port}/console/",
            config_path=str(path),
            config=config,
            hooks_url=hooks_url,
            sim=handle,
            receiver=receiver,
            failing=failing,
            quarantined_id=bad.id,
            changed_ids=[r.id for r in changed],
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        await receiver.stop()
        await http.close()
        await sim_runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless, shared by the module's tests."""
    assert os.access(CHROMIUM, os.X_OK), "chromium is missing: tests/run installs it with apt"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test, sized like a laptop screen."""
    fresh = await browser.new_context(viewport={"width": 1280, "height": 800})
    yield fresh
    await fresh.close()


async def _shot(page: Page, name: str) -> str:
    """Save the page as <SHOTS>/<name>.png and return its HTML, checked for secrets."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    html = await page.content()
    for secret in EVERY_SECRET:
        assert secret not in html, f"a secret shows on the {name} page"
    return html


async def _sign_in(page: Page, url: str) -> None:
    await page.goto(url)
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("text=Overview")


async def test_the_console_refuses_without_the_token(world: World, context: BrowserContext) -> None:
    """No token: 401 and the login form; a wrong token typed or sent as Bearer: refused,
    no session cookie; health and metrics stay open."""
    page = await context.new_page()
    reply = await page.goto(world.base)
    assert reply is not None
    assert reply.status == 401
    assert await page.is_visible("#token")
    assert not await page.is_visible("text=Sinks")
    await _shot(page, "login")
    await page.fill("#token", "not-the-token")
    await page.click("button[type=submit]")
    await page.wait_for_selector("text=That is not the console token")
    assert await context.cookies() == []
    async with aiohttp.ClientSession() as http:
        for path in ("", "dead-letters/hr", "events", "quarantine"):
            async with http.get(world.base + path) as answer:
                assert answer.status == 401, path
                assert "Console token" in await answer.text()
        headers = {"Authorization": "Bearer wrong"}
        async with http.get(world.base, headers=headers) as answer:
            assert answer.status == 401
        async with http.post(world.base + "sinks/hr/enable") as answer:
            assert answer.status == 401
        root = world.base.removesuffix("console/")
        async with http.get(root + "healthz") as answer:
            assert answer.status == 200
        async with http.get(root + "metrics") as answer:
            assert answer.status == 200


async def test_bearer_and_the_login_form_open_the_console(
    world: World, context: BrowserContext
) -> None:
    """The token as Bearer opens every page; the login form sets an HttpOnly, SameSite=Strict
    cookie on the console's path that holds a session, not the token."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for path in ("", "events", "quarantine", "dead-letters/hr"):
            async with http.get(world.base + path) as answer:
                assert answer.status == 200, path
                assert TOKEN not in await answer.text()
    page = await context.new_page()
    await _sign_in(page, world.base)
    (cookie,) = await context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console/"
    assert TOKEN not in cookie["value"]


async def test_the_overview_shows_what_status_json_prints(
    world: World, context: BrowserContext
) -> None:
    """Every figure of the overview equals the one `status --json` prints at the same moment
    (a real subprocess), while the bridge is quiet."""
    page = await context.new_page()
    await _sign_in(page, world.base)

    async def figures() -> dict[str, str]:
        await page.reload()
        pairs = await page.eval_on_selector_all(
            "[data-figure]", "els => els.map(e => [e.dataset.figure, e.textContent.trim()])"
        )
        return dict(pairs)

    for _ in range(5):
        before = await figures()
        proc = await asyncio.create_subprocess_exec(
            *BRIDGE,
            "status",
            "--json",
            "--config",
            world.config_path,
            env=CONSOLE_ENV,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        after = await figures()
        if before == after:
            break
    else:
        pytest.fail("the overview kept changing while the bridge should be quiet")
    report = json.loads(out)
    expected = {"outbox": str(report["outbox"])}
    for outcome in ("received", "used", "unusable", "failed", "refused"):
        expected[f"notices:{outcome}"] = str(report["notices"][outcome])
    for feed in report["feeds"]:
        expected[f"feed:{feed['name']}:scopes"] = str(len(feed["scopes"]))
        expected[f"feed:{feed['name']}:quarantined"] = str(len(feed["quarantined"]))
        errors = sum(1 for s in feed["scopes"] if s["last_error"])
        expected[f"feed:{feed['name']}:errors"] = str(errors)
    for sink in report["sinks"]:
        for figure in ("backlog", "queued", "retrying", "dead_lettered", "dead_letters_dropped"):
            expected[f"sink:{sink['name']}:{figure}"] = str(sink[figure])
        expected[f"sink:{sink['name']}:disabled"] = (
            f"disabled: {sink['disabled']}" if sink["disabled"] else "enabled"
        )
    shown = {k: v.split("\n")[0].strip() for k, v in after.items()}
    assert shown == expected
    assert shown["sink:hr:dead_lettered"] == "2"
    assert shown["feed:courses:quarantined"] == "1"
    assert shown["notices:refused"] == "1"
    await _shot(page, "overview")


async def test_the_overview_reads_on_a_phone_in_the_browsers_zone(
    browser: Browser, world: World
) -> None:
    """On a phone-sized screen in another time zone, the page does not scroll sideways (wide
    tables scroll within themselves) and times show in that zone, the UTC instant kept."""
    phone = await browser.new_context(
        viewport={"width": 390, "height": 844}, timezone_id="Pacific/Auckland", is_mobile=True
    )
    try:
        page = await phone.new_page()
        await _sign_in(page, world.base)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        stamp = page.locator("h1 time")
        instant = await stamp.get_attribute("datetime")
        assert instant is not None
        assert instant.endswith("Z")
        local = datetime.fromisoformat(instant).astimezone(ZoneInfo("Pacific/Auckland"))
        shown = await stamp.inner_text()
        assert f"{(local.hour - 1) % 12 + 1}:{local.minute:02d}:{local.second:02d}" in shown
        assert str(local.day) in shown
        await _shot(page, "overview-phone")
    finally:
        await phone.close()


async def test_a_dead_letter_replayed_from_the_console_reaches_the_receiver(
    world: World, context: BrowserContext
) -> None:
    """Open the sink's dead letters, open one (its event, tries, last error), replay it:
    the receiver, working again, gets that event with a valid signature."""
    page = await context.new_page()
    await _sign_in(page, world.base)
    await page.click('[data-figure="sink:hr:dead_lettered"]')
    await page.wait_for_selector("text=Dead letters of hr")
    rows = page.locator("tr[data-dead-letter]")
    assert await rows.count() == 2
    assert "HTTP 500" in await rows.first.inner_text()
    await _shot(page, "dead-letters")
    await rows.first.locator("a").first.click()
    await page.wait_for_selector("#replay-one")
    event = json.loads(await page.inner_text("pre.json"))
    assert event["type"] == "absorb.course_enrollment.status_changed"
    assert event["subject"] in world.changed_ids
    assert "HTTP 500" in await page.inner_text("td.err")
    await _shot(page, "dead-letter")
    overview = await context.new_page()
    await overview.goto(world.base)
    figure = '[data-figure="sink:hr:dead_lettered"]'
    assert await overview.inner_text(figure) == "2"
    world.failing["on"] = False
    await page.click("#replay-one")
    await page.wait_for_selector("text=hr: 1 replayed")

    async def arrived() -> bool:
        return event["id"] in world.receiver.ids()

    await until(arrived, "the replayed event at the receiver", timeout_s=30)
    assert world.receiver.problems == []
    # The overview, left open, refreshes itself.
    await expect(overview.locator(figure)).to_have_text("1", timeout=15_000)
    await page.reload()
    assert await page.locator("tr[data-dead-letter]").count() == 1


async def test_a_quarantined_record_shows_its_raw_text_escaped(
    world: World, context: BrowserContext
) -> None:
    """The quarantine page lists the unreadable record with its error and its raw text,
    shown as text (hostile markup stays inert); Retry sweeps its scope in full."""
    page = await context.new_page()
    await _sign_in(page, world.base)
    await page.click("text=Quarantine")
    row = page.locator("tr[data-quarantined]")
    await row.first.wait_for()
    assert await row.count() == 1
    assert world.quarantined_id in await row.first.inner_text()
    raw = await page.inner_text("pre.raw")
    assert HOSTILE in raw
    assert world.quarantined_id in raw
    assert await page.locator("pre.raw b").count() == 0
    assert await page.locator("pre.raw script").count() == 0
    await _shot(page, "quarantine")
    await row.first.locator("button").click()
    await page.wait_for_selector("text=1/1 scopes swept in full")
    assert await page.locator("tr[data-quarantined]").count() == 1


async def test_recent_events_filter_and_open_whole_cloudevents(
    world: World, context: BrowserContext
) -> None:
    """Recent events come from the outbox, filter by type and subject, and each opens to its
    whole CloudEvent."""
    page = await context.new_page()
    await _sign_in(page, world.base)
    await page.click("text=Recent events")
    await page.fill('input[name="type"]', "absorb.course_enrollment.status_changed")
    await page.click("text=Filter")
    await page.wait_for_selector("a[data-event-type]")
    types = await page.locator("a[data-event-type]").all_inner_texts()
    assert types
    assert set(types) == {"absorb.course_enrollment.status_changed"}
    await _shot(page, "events")
    subject = world.changed_ids[0]
    await page.goto(f"{world.base}events?subject={subject}")
    assert await page.locator("a[data-event-type]").count() >= 1
    await page.locator("a[data-event-type]").first.click()
    event = json.loads(await page.inner_text("#cloudevent"))
    assert event["specversion"] == "1.0"
    assert event["subject"] == subject
    assert set(event["data"]) == {"current", "previous", "changed"}
    await _shot(page, "event")
    await page.goto(f"{world.base}events?status=NoSuchStatus")
    assert await page.locator("a[data-event-type]").count() == 0


async def test_actions_need_the_pages_csrf_token_and_origin(
    world: World, context: BrowserContext
) -> None:
    """With a session, a post without the page's CSRF token, or from another origin, is
    refused; the same post from the page goes through."""
    page = await context.new_page()
    await _sign_in(page, world.base)
    refused = await page.request.post(world.base + "sinks/hr/enable", form={"csrf": "nope"})
    assert refused.status == 403
    csrf = await page.get_attribute('input[name="csrf"]', "value")
    assert csrf
    foreign = await page.request.post(
        world.base + "sinks/hr/enable",
        form={"csrf": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status == 403
    done = await page.request.post(world.base + "sinks/hr/enable", form={"csrf": csrf})
    assert done.ok
    assert "hr: enabled" in await done.text()


async def test_resync_a_feed_and_enable_a_disabled_sink_from_the_overview(
    world: World, context: BrowserContext
) -> None:
    """Resync sweeps every scope of the feed in full; a sink disabled (as a 410 disables it)
    shows why, and Enable lets deliveries go again."""
    page = await context.new_page()
    await _sign_in(page, world.base)
    await page.click('tr[data-feed="courses"] button:has-text("Resync")')
    await page.wait_for_selector("text=courses: resync started")
    # It runs apart from the request; the overview refreshes itself until it shows the end.
    await page.wait_for_selector("text=courses: 2/2 scopes swept in full", timeout=20_000)
    async with connect(world.config) as parts:
        queue = DeliveryQueue(parts.redis, parts.store.prefix, "audit")
        assert await queue.disable("HTTP 410 Gone from the receiver")
        await page.reload()
        state = page.locator('[data-figure="sink:audit:disabled"]')
        assert (await state.inner_text()).startswith("disabled: HTTP 410 Gone")
        await state.locator("button").click()
        await page.wait_for_selector("text=audit: enabled")
        assert await queue.disabled() is None
    assert await page.inner_text('[data-figure="sink:audit:disabled"]') == "enabled"


async def test_the_console_works_behind_a_proxy_under_a_sub_path(
    world: World, context: BrowserContext
) -> None:
    """Behind a reverse proxy that serves the bridge under /ops/ (X-Forwarded-Prefix), login,
    links and actions stay under /ops/console/."""
    target = world.base.removesuffix("/console/")
    http = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers |= {"X-Forwarded-Prefix": "/ops", "X-Forwarded-Host": request.host}
        url = target + "/" + request.match_info["tail"]
        async with http.request(
            request.method,
            url,
            params=request.query,
            data=await request.read(),
            headers=headers,
            allow_redirects=False,
        ) as answer:
            kept = {"Content-Type", "Location", "Set-Cookie", "Retry-After"}
            reply = web.Response(status=answer.status, body=await answer.read())
            for name, value in answer.headers.items():
                if name in kept:
                    reply.headers.add(name, value)
            return reply

    app = web.Application()
    app.router.add_route("*", "/ops/{tail:.*}", forward)
    runner, proxy = await serve(app)
    try:
        page = await context.new_page()
        await _sign_in(page, f"{proxy}/ops/console/")
        assert page.url == f"{proxy}/ops/console/"
        (cookie,) = await context.cookies()
        assert cookie["path"] == "/ops/console/"
        await page.click("text=Recent events")
        await page.wait_for_selector("text=shown of the newest")
        assert page.url.startswith(f"{proxy}/ops/console/events")
        await page.click("text=Overview")
        await page.click('tr[data-sink="audit"] [data-figure="sink:audit:dead_lettered"]')
        await page.wait_for_selector("text=Dead letters of audit")
        assert page.url == f"{proxy}/ops/console/dead-letters/audit"
        await page.click("text=Quarantine")
        await page.locator("tr[data-quarantined] button").click()
        await page.wait_for_selector("text=scopes swept in full")
        assert page.url.startswith(f"{proxy}/ops/console/quarantine?")
    finally:
        await runner.cleanup()
        await http.close()


async def test_guessing_the_token_is_slowed_down(world: World) -> None:
    """After five wrong tokens from one address each further try earns a growing wait: 429 with
    Retry-After, even for the right token, until the wait is over."""
    async with aiohttp.ClientSession() as http:
        codes = []
        for _ in range(7):
            async with http.get(world.base, headers={"Authorization": "Bearer wrong"}) as answer:
                codes.append(answer.status)
                retry_after = answer.headers.get("Retry-After")
        assert codes[:6] == [401] * 6
        assert codes[6] == 429
        assert retry_after is not None
        assert int(retry_after) >= 1
        async with http.post(world.base + "login", data={"token": TOKEN}) as answer:
            assert answer.status == 429
        await asyncio.sleep(int(retry_after) + 0.2)
        async with http.get(world.base, headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
            assert answer.status == 200
