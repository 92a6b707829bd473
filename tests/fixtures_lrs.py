"""Fixtures for a real LRS: Ralph, started by tests/run, and private Ralph servers.

`lrs` is the session's Ralph (its URL and HTTP Basic credentials come from the
environment tests/run sets; without them the tests fail saying so, never skip).
`ralph_server` is a Ralph of the test's own that it may stop and start again (same
port, same statements file) to play an LRS outage. `read_statements` reads back
what an LRS holds, the way an LRS client does.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from tests.fixtures_brokers import INSTALL_HINT, _free_port, _stop, _tail

SCHEMA_PATH = Path(__file__).with_name("xapi_statement.schema.json")
HEADERS = {"X-Experience-API-Version": "1.0.3"}


@dataclass(frozen=True)
class Lrs:
    """Where an LRS answers (its xAPI base, ending in /) and the credentials it takes."""

    url: str
    username: str
    password: str

    def headers(self) -> dict[str, str]:
        """The headers an xAPI client sends: the version and HTTP Basic credentials."""
        pair = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {**HEADERS, "Authorization": f"Basic {pair}"}

    def sink_config(self, name: str = "lrs", **extra: Any) -> dict[str, Any]:
        """An `xapi` sink's settings for this LRS, as a config file gives them."""
        return {
            "name": name,
            "type": "xapi",
            "endpoint": self.url,
            "username": self.username,
            "password": self.password,
            **extra,
        }


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: the Ralph LRS these tests use is started by bash tests/run",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def lrs() -> Lrs:
    """The session's Ralph LRS that tests/run started."""
    return Lrs(
        _env("ABSORB_BRIDGE_TEST_LRS_URL"),
        _env("ABSORB_BRIDGE_TEST_LRS_USERNAME"),
        _env("ABSORB_BRIDGE_TEST_LRS_PASSWORD"),
    )


@pytest.fixture(scope="session")
def statement_schema() -> jsonschema.protocols.Validator:
    """A validator of the xAPI 1.0.3 statement schema kept in tests/."""
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


async def read_statements(lrs: Lrs, **query: str) -> list[dict[str, Any]]:
    """Every statement the LRS returns for `query` (registration=…, statementId=…), all pages."""
    found: list[dict[str, Any]] = []
    base = lrs.url.split("/xAPI/")[0]
    url: str | None = lrs.url + "statements"
    params: dict[str, str] | None = {**query, "limit": "500"}
    async with aiohttp.ClientSession(headers=lrs.headers()) as session:
        while url:
            async with session.get(url, params=params) as reply:
                assert reply.status == 200, f"GET statements {query}: {reply.status}"
                body = await reply.json()
            if "statements" not in body:  # a single statement, by statementId
                return [body]
            found += body["statements"]
            more = body.get("more")
            url, params = (base + more if more else None), None
    return found


class RalphServer:
    """A Ralph LRS of a test's own on a loopback port; `stop()`/`start()` keep port and data."""

    def __init__(self, workdir: Path) -> None:
        self.python = _env("ABSORB_BRIDGE_TEST_RALPH_PYTHON")
        self.launcher = _env("ABSORB_BRIDGE_TEST_RALPH_LAUNCHER")
        auth_file = Path(_env("RALPH_AUTH_FILE"))
        if not Path(self.python).exists():
            pytest.fail(f"{self.python} is missing; {INSTALL_HINT}", pytrace=False)
        self.workdir = workdir
        # The session's users, so the same credentials work here.
        shutil.copy(auth_file, workdir / "auth.json")
        self.port = _free_port()
        self.log_path = workdir / "ralph.log"
        self.url = f"http://127.0.0.1:{self.port}/xAPI/"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and return once it answers HTTP."""
        if self._proc is not None:
            return
        env = {
            **os.environ,
            "RALPH_RUNSERVER_BACKEND": "fs",
            "RALPH_AUTH_FILE": str(self.workdir / "auth.json"),
            "RALPH_BACKENDS__DATA__FS__DEFAULT_DIRECTORY_PATH": str(self.workdir),
            "RALPH_BACKENDS__LRS__FS__DEFAULT_DIRECTORY_PATH": str(self.workdir),
        }
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.python, self.launcher, "127.0.0.1", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"Ralph did not start:\n{_tail(self.log_path)}", pytrace=False)

    def stop(self) -> None:
        """Stop the server (clients see refused connections); a no-op when it is stopped."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None


@pytest.fixture
def ralph_server() -> Iterator[RalphServer]:
    """A private Ralph for this test alone (a few seconds), which it may stop and start."""
    with tempfile.TemporaryDirectory(prefix="absorb-ralph-") as workdir:
        server = RalphServer(Path(workdir))
        try:
            yield server
        finally:
            server.stop()
