"""The `absorb-bridge` command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:  # imported lazily at run time: only `simulate` needs it
    from bridge.simulator.server import Simulator

from bridge import __version__, logs
from bridge.durations import parse_duration

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="absorb-bridge",
        description="Change detection for Absorb LMS enrollments, delivered as CloudEvents.",
    )
    parser.add_argument("--version", action="version", version=f"absorb-bridge {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="default: info (warning for the demo, whose screen is its events)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser("simulate", help="serve a simulated Absorb tenant over HTTP")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8089)
    sim.add_argument("--api-key", required=True, help="the tenant's private API key")
    sim.add_argument("--username", required=True, help="the admin user's name")
    sim.add_argument("--password", required=True, help="the admin user's password")
    sim.add_argument("--users", type=int, default=200)
    sim.add_argument("--courses", type=int, default=20)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--chapters-per-course", type=int, default=2)
    sim.add_argument("--lessons-per-chapter", type=int, default=2)
    sim.add_argument("--sessions-per-ilc", type=int, default=2)
    sim.add_argument(
        "--enrollment-ratio",
        type=float,
        default=0.3,
        help="share of user x course pairs enrolled (default 0.3)",
    )
    sim.add_argument("--activity-per-second", type=float, default=0.0)
    sim.add_argument(
        "--token-ttl",
        type=_duration,
        default=4 * 3600.0,
        help="token lifetime on the simulator's clock (default 4h)",
    )
    sim.add_argument(
        "--skew",
        type=_duration,
        default=0.0,
        help="how far the simulator's clock runs ahead of this machine's",
    )
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a fault to play from the start, e.g. error_rate=0.1 (repeatable)",
    )

    def with_config(name: str, help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help)
        command.add_argument(
            "--config",
            default=None,
            metavar="FILE",
            help="the config file (or ABSORB_BRIDGE_CONFIG)",
        )
        return command

    with_config("run", "sweep, detect and deliver until SIGTERM/SIGINT")
    with_config("check-config", "validate the config and print it with secrets masked")
    status = with_config("status", "watermarks and lag per feed, backlog per sink")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    replay = with_config("replay", "move a sink's dead-lettered events back for delivery")
    replay.add_argument("--sink", required=True, metavar="NAME")
    replay.add_argument(
        "--since",
        default=None,
        metavar="WHEN",
        help="only letters that failed since then: a duration (2h) or a timestamp",
    )
    replay.add_argument("--id", default=None, metavar="EVENT_ID", help="only this event")
    resync = with_config("resync", "a full reconciliation sweep of one feed, now")
    resync.add_argument("--feed", required=True, metavar="NAME")

    sub.add_parser("config-schema", help="print the JSON Schema of the config file (for editors)")

    demo = sub.add_parser("demo", help="watch the pipeline work on a simulated tenant")
    demo.add_argument(
        "--duration", type=_duration, default=None, help="stop by itself after this long (e.g. 30s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    quiet = args.command == "demo"
    logs.configure(level=args.log_level or ("warning" if quiet else "info"))
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "run":
            from bridge.commands.run import run

            return run(args.config)
        if args.command == "check-config":
            from bridge.commands.check_config import check_config

            return check_config(args.config)
        if args.command == "status":
            from bridge.commands.status import status

            return status(args.config, as_json=args.json)
        if args.command == "replay":
            from bridge.commands.replay import replay

            return replay(args.config, args.sink, since=args.since, event_id=args.id)
        if args.command == "resync":
            from bridge.commands.resync import resync

            return resync(args.config, args.feed)
        if args.command == "config-schema":
            import json

            from bridge.config import Config

            schema = Config.model_json_schema(by_alias=True, mode="validation")
            print(json.dumps(schema, indent=2))
            return EXIT_OK
        if args.command == "demo":
            from bridge.demo import run_demo

            code: int = asyncio.run(run_demo(args.duration))
            return code
    except KeyboardInterrupt:
        return EXIT_OK
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def _simulate(args: argparse.Namespace) -> int:
    from bridge.simulator.faults import Faults, parse_assignments
    from bridge.simulator.generate import TenantSpec
    from bridge.simulator.server import Simulator, SimulatorConfig

    try:
        faults = Faults.model_validate(parse_assignments(args.fault))
        spec = TenantSpec(
            seed=args.seed,
            users=args.users,
            courses=args.courses,
            chapters_per_course=args.chapters_per_course,
            lessons_per_chapter=args.lessons_per_chapter,
            sessions_per_ilc=args.sessions_per_ilc,
            enrollment_ratio=args.enrollment_ratio,
        )
    except (ValueError, ValidationError) as e:
        print(f"absorb-bridge simulate: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    config = SimulatorConfig(
        api_key=args.api_key,
        username=args.username,
        password=args.password,
        tenant=spec,
        activity_per_second=args.activity_per_second,
        token_ttl_s=args.token_ttl,
        skew_s=args.skew,
        faults=faults,
    )
    asyncio.run(_serve(Simulator(config), args.host, args.port))
    return EXIT_OK


async def _serve(sim: Simulator, host: str, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    t = sim.tenant
    print(
        f"Absorb simulator on http://{host}:{port}  users={len(t.users)} courses={len(t.courses)} "
        f"enrollments={len(t.enrollments)}  control API: /_sim/state",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
