"""Session fixtures for real message brokers: nats-server (JetStream) and rabbitmq-server.

`nats_url` and `amqp_url` use the server named by `ABSORB_BRIDGE_TEST_NATS_URL` /
`ABSORB_BRIDGE_TEST_AMQP_URL` when set, else start one on a free loopback port for
the session. `nats_server` is a private nats-server a test may stop and start again
(same port, same JetStream store) to play an outage; `rabbit_server` is the same
for RabbitMQ (same port, same data). `make_pipeline` wires a sink
to the real delivery core (outbox, per-sink queue, `SinkWorker`) on a fresh key
prefix, for tests that deliver through brokers.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.delivery.policy import Circuit
from bridge.delivery.worker import SinkWorker
from bridge.routes import Route
from bridge.sinks.base import Sink
from bridge.store import Store
from tests.engine import put_events

INSTALL_HINT = "run the README's test command (bash tests/run), which installs it"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary(name: str, *fallbacks: str) -> str:
    """The path of a server binary, or fail the test run saying how to get it."""
    found = shutil.which(name) or next((f for f in fallbacks if os.access(f, os.X_OK)), None)
    if found is None:
        pytest.fail(f"{name} is not installed; {INSTALL_HINT}", pytrace=False)
    return found


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """Terminate a server we started, then kill its whole process group if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        # Started with start_new_session, so the group is ours alone.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- NATS -------------------------------------------------------------------------------


class NatsServer:
    """A nats-server with JetStream on a loopback port; `stop()`/`start()` keep port and store.

    `extra_args` go to the server as they are (`--auth TOKEN`, say).
    """

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        self.binary = _binary("nats-server")
        self.extra_args = extra_args
        self.port = _free_port()
        self.store_dir = workdir / "jetstream"
        self.log_path = workdir / "nats-server.log"
        self.url = f"nats://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the server and return once it accepts clients with JetStream on."""
        if self._proc is not None:
            return
        args = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), *self.extra_args]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [*args, "-sd", str(self.store_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._jetstream_ready():
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"nats-server did not start:\n{_tail(self.log_path)}", pytrace=False)

    def _jetstream_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                line = s.makefile("rb").readline()
        except OSError:
            return False
        if not line.startswith(b"INFO "):
            return False
        return bool(json.loads(line[5:]).get("jetstream"))

    def stop(self) -> None:
        """Stop the server (clients see the connection drop); a no-op when it is stopped."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None


@contextmanager
def _nats_server() -> Iterator[NatsServer]:
    with tempfile.TemporaryDirectory(prefix="absorb-nats-") as workdir:
        server = NatsServer(Path(workdir))
        try:
            server.start()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A NATS server with JetStream: `ABSORB_BRIDGE_TEST_NATS_URL`, or one started here."""
    given = os.environ.get("ABSORB_BRIDGE_TEST_NATS_URL")
    if given:
        yield given
        return
    with _nats_server() as server:
        yield server.url


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A private nats-server for this test alone, which it may stop and start again."""
    with _nats_server() as server:
        yield server


# -- RabbitMQ ---------------------------------------------------------------------------

_RABBITMQ_CONF = """\
loopback_users = none
# Test machines are often short of disk; an alarm would block every publisher.
disk_free_limit.absolute = 1MB
"""


class RabbitServer:
    """A throw-away rabbitmq-server node: its own name, ports, data and Erlang cookie."""

    def __init__(self, workdir: Path) -> None:
        self.binary = _binary("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server")
        # The Debian wrapper in /usr/sbin switches to the rabbitmq user; run the real script.
        real = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        if Path(self.binary).resolve().name == "rabbitmq-script-wrapper" and real.exists():
            self.binary = str(real)
        self.workdir = workdir
        self.port = _free_port()
        self.epmd_port = _free_port()
        self.log_path = workdir / "rabbitmq-server.log"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The environment that keeps the node apart from any system RabbitMQ."""
        return {
            **os.environ,
            "HOME": str(self.workdir),  # the Erlang cookie lives here
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODENAME": f"absorbtest-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            # A port mapper of our own, so stopping it cannot touch anyone else's nodes.
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, timeout_s: float = 60.0, *, fail: bool = True) -> bool:
        """Start the node and return once a real AMQP connection to it succeeds.

        When it does not start in time: fail the test, or with `fail=False` return False.
        """
        (self.workdir / "enabled_plugins").write_text("")
        (self.workdir / "rabbitmq.conf").write_text(_RABBITMQ_CONF)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary],
                env=self.env(),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._proc.poll() is None:
            if _accepts(self.port) and _amqp_connects(self.url):
                return True
            time.sleep(0.2)
        self.stop()
        if fail:
            pytest.fail(f"rabbitmq-server did not start:\n{_tail(self.log_path)}", pytrace=False)
        return False

    def stop(self) -> None:
        """Stop the node and its port mapper."""
        if self._proc is not None:
            _stop(self._proc, grace_s=30)
            self._proc = None
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        if os.access(epmd, os.X_OK):
            subprocess.run(
                [epmd, "-kill"],
                env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)},
                capture_output=True,
                timeout=10,
                check=False,
            )


def _new_node(workdir: Path) -> RabbitServer:
    """A started node. Its ports are picked free before it binds them, so another process
    may take one first: a node that does not start gets a second try on other ports."""
    for n in (1, 2):
        (workdir / f"node{n}").mkdir()
        server = RabbitServer(workdir / f"node{n}")
        if server.start(fail=n == 2):
            return server
    raise AssertionError("unreachable: the second try fails the test")


def _amqp_connects(url: str) -> bool:
    """Whether a real AMQP connection succeeds (RabbitMQ listens before it is ready)."""
    import aio_pika

    async def attempt() -> bool:
        try:
            connection = await aio_pika.connect(url, timeout=5)
        except Exception:
            return False
        await connection.close()
        return True

    # A loop of its own, never made current: the tests' loops are pytest-asyncio's business.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(attempt())
    finally:
        loop.close()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ server: `ABSORB_BRIDGE_TEST_AMQP_URL`, or a node started here (~5 s)."""
    given = os.environ.get("ABSORB_BRIDGE_TEST_AMQP_URL")
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="absorb-rabbit-") as workdir:
        server = _new_node(Path(workdir))
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture
def rabbit_server() -> Iterator[RabbitServer]:
    """A private RabbitMQ node for this test alone (~5 s), which it may stop and start again."""
    with tempfile.TemporaryDirectory(prefix="absorb-rabbit-") as workdir:
        server = _new_node(Path(workdir))
        try:
            yield server
        finally:
            server.stop()


# -- delivery through a broker ----------------------------------------------------------

#: A retry schedule fast enough for tests: 12 tries over about half a second.
FAST_SCHEDULE_S = (0.0, *(0.05,) * 11)


@dataclass
class Pipeline:
    """A sink behind the real delivery core: events go in the outbox, `run()` delivers them."""

    store: Store
    worker: SinkWorker

    async def put(self, events: list[dict[str, Any]]) -> None:
        """Append CloudEvents to the outbox."""
        await put_events(self.store, events)

    async def settled(self) -> bool:
        """Whether every event put so far was delivered or dead-lettered."""
        backlog = await self.worker.backlog()
        return backlog["lag"] == 0 and backlog["pending"] == 0 and backlog["queued"] == 0

    async def run(self, until: Callable[[], bool] | None = None, *, timeout_s: float = 20) -> None:
        """Feed and deliver until `until()` holds (default: all settled), failing on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (until() if until is not None else await self.settled()):
            if loop.time() > deadline:
                backlog = await self.worker.backlog()
                pytest.fail(
                    f"delivery did not finish in {timeout_s} s: {backlog}, "
                    f"delivered={self.worker.delivered} failed={self.worker.failed}"
                )
            await self.worker.feed_once()
            if not await self.worker.deliver_once():
                # Retries are due on the real clock: give it a moment.
                await asyncio.sleep(0.01)


MakePipeline = Callable[..., Awaitable[Pipeline]]


@pytest.fixture
def make_pipeline(redis: aioredis.Redis) -> MakePipeline:
    """Build pipelines for sinks, each on its own key prefix, with a fast retry schedule."""

    async def make(sink: Sink, *, schedule: Sequence[float] = FAST_SCHEDULE_S) -> Pipeline:
        store = Store(redis, f"test-{secrets.token_hex(4)}")
        worker = SinkWorker(
            redis,
            store.prefix,
            sink,
            [Route(sinks=(sink.name,))],
            consumer="test",
            schedule=schedule,
            # The circuit breaker is not under test here: keep it closed.
            circuit=Circuit(threshold=1_000_000),
        )
        await worker.setup()
        return Pipeline(store, worker)

    return make
