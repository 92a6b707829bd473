"""The `absorb-bridge` command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import shtab
from pydantic import ValidationError
from redis.exceptions import RedisError

if TYPE_CHECKING:  # imported lazily at run time: only `simulate` needs it
    from bridge.simulator.server import Simulator

from bridge import __version__, logs
from bridge.commands.failures import explain
from bridge.durations import parse_duration
from bridge.errors import BridgeError

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2

#: The daemons log their work; the demo's screen is its events; a one-shot command
#: prints its answer, and its logs (retries while Absorb is slow) only with --log-level.
_DEFAULT_LOG_LEVEL = {"run": "info", "simulate": "info", "demo": "warning"}


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="absorb-bridge",
        description="Change detection for Absorb LMS enrollments, delivered as CloudEvents.",
    )
    parser.add_argument("--version", action="version", version=f"absorb-bridge {__version__}")
    _global_options(parser, config=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return _global_options(sub.add_parser(name, help=help))

    sim = command("simulate", "serve a simulated Absorb tenant over HTTP")
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
        return _global_options(sub.add_parser(name, help=help), config=True)

    with_config("run", "sweep, detect and deliver until SIGTERM/SIGINT")
    with_config("check-config", "validate the config and print it with secrets masked")
    status = with_config("status", "watermarks and lag per feed, backlog per sink")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--check",
        action="store_true",
        help="exit 1 with one line per problem when something needs a person",
    )
    letters = with_config("dead-letters", "list a sink's dead-lettered events")
    letters.add_argument("--sink", required=True, metavar="NAME")
    letters.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help="at most N, newest first (50)"
    )
    letters.add_argument("--json", action="store_true", help="one JSON object per letter")
    tester = with_config("test-sink", "deliver one sample event to a sink and print its answer")
    tester.add_argument("--sink", required=True, metavar="NAME")
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

    command("config-schema", "print the JSON Schema of the config file (for editors)")

    completion = command("completion", "print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])

    demo = command("demo", "watch the pipeline work on a simulated tenant")
    demo.add_argument(
        "--duration", type=_duration, default=None, help="stop by itself after this long (e.g. 30s)"
    )
    return parser


def _global_options(
    parser: argparse.ArgumentParser, *, config: bool = False
) -> argparse.ArgumentParser:
    """Options taken before the command or after it: `--log-level`, and `--config` where used.

    Their default is to leave the namespace alone, so one given before the command is
    not overwritten by the command's own parser; `main` fills in what is missing.
    """
    parser.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
        help="default: info for run and simulate, warning for the demo, error for the rest",
    )
    if config:
        option = parser.add_argument(
            "--config",
            default=argparse.SUPPRESS,
            metavar="FILE",
            help="the config file (or ABSORB_BRIDGE_CONFIG)",
        )
        option.complete = shtab.FILE  # type: ignore[attr-defined]  # read by shtab
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    args.config = getattr(args, "config", None)
    logs.configure(
        level=getattr(args, "log_level", None) or _DEFAULT_LOG_LEVEL.get(args.command, "error")
    )
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except (BridgeError, RedisError, OSError) as e:
        # Redis or Absorb out of reach, an address in use: the user needs one line, not a trace.
        print(f"absorb-bridge {args.command}: {explain(e, args.command)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _dispatch(args: argparse.Namespace) -> int:
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

        return status(args.config, as_json=args.json, check=args.check)
    if args.command == "dead-letters":
        from bridge.commands.dead_letters import dead_letters

        return dead_letters(args.config, args.sink, limit=args.limit, as_json=args.json)
    if args.command == "test-sink":
        from bridge.commands.test_sink import test_sink

        return test_sink(args.config, args.sink)
    if args.command == "replay":
        from bridge.commands.replay import replay

        return replay(args.config, args.sink, since=args.since, event_id=args.id)
    if args.command == "resync":
        from bridge.commands.resync import resync

        return resync(args.config, args.feed)
    if args.command == "completion":
        print(shtab.complete(build_parser(), shell=args.shell))
        return EXIT_OK
    if args.command == "config-schema":
        from bridge.config.schema import print_schema

        return print_schema()
    if args.command == "demo":
        try:
            from bridge.demo import run_demo
        except ModuleNotFoundError as e:
            if e.name != "fakeredis":
                raise
            print(
                "absorb-bridge demo: the demo keeps its state in fakeredis, which is not "
                "installed: pip install 'absorb-bridge[demo]'",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT

        code: int = asyncio.run(run_demo(args.duration))
        return code
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
