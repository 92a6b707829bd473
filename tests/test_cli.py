"""The command line as a user runs it: real processes, real ports, real signals."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

BRIDGE = [sys.executable, "-m", "bridge"]


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float = 30) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line with {needle!r}; exit code {proc.poll()}")


def _call(url: str, headers: dict[str, str], body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={**headers, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


def test_simulate_serves_absorb_and_stops_on_sigterm() -> None:
    """`absorb-bridge simulate` with the documented flags serves auth and courses, then exits 0."""
    port = free_port()
    args = [
        "simulate", "--host", "127.0.0.1", "--port", str(port), "--api-key", "K",
        "--username", "U", "--password", "W", "--users", "200", "--courses", "20", "--seed", "1",
    ]  # fmt: skip
    with subprocess.Popen([*BRIDGE, *args], stdout=subprocess.PIPE, text=True) as proc:
        try:
            _wait_for_line(proc, "Absorb simulator on")
            url = f"http://127.0.0.1:{port}"
            headers = {"x-api-key": "K", "x-api-version": "2"}
            token = _call(
                f"{url}/authenticate",
                headers,
                {"username": "U", "password": "W", "privateKey": "K"},
            )
            page = _call(
                f"{url}/courses?_limit=100", {**headers, "Authorization": f"Bearer {token}"}
            )
            assert page["totalItems"] == 20
            assert len(page["courses"]) == 20
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0


def test_simulate_rejects_a_bad_fault() -> None:
    """A fault that is not KEY=VALUE, or not a known key, is exit code 1 with the reason."""
    base = [*BRIDGE, "simulate", "--api-key", "K", "--username", "U", "--password", "W"]
    for fault, reason in (("error_rate", "KEY=VALUE"), ("nosuch=1", "nosuch")):
        done = subprocess.run([*base, "--fault", fault], capture_output=True, text=True, timeout=30)
        assert done.returncode == 1
        assert reason in done.stderr


def test_usage_errors_exit_2() -> None:
    """A missing required flag or an unknown command is a usage error (exit 2)."""
    assert subprocess.run([*BRIDGE, "simulate"], capture_output=True, timeout=30).returncode == 2
    assert subprocess.run([*BRIDGE, "nosuch"], capture_output=True, timeout=30).returncode == 2


def test_demo_shows_changes_and_stops_by_itself() -> None:
    """`absorb-bridge demo --duration` prints transitions within seconds, a summary, and exits 0;
    meanwhile its console answers with the token it printed, and only with it."""
    env = {**os.environ, "NO_COLOR": "1"}
    demo = subprocess.Popen(
        [*BRIDGE, "demo", "--duration", "8s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert demo.stdout is not None
    lines = [demo.stdout.readline() for _ in range(5)]
    found = re.search(r"(http://127\.0\.0\.1:\d+/console/) \(token: (demo-[^)]+)\)", "".join(lines))
    assert found, lines
    console, token = found.groups()
    overview = urllib.request.Request(console, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(overview, timeout=10) as answer:
        assert 'data-sink="terminal"' in answer.read().decode()
    wrong = urllib.request.Request(console, headers={"Authorization": "Bearer demo-guess"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    refused.value.close()
    assert refused.value.code == 401
    rest, errors = demo.communicate(timeout=90)
    assert demo.returncode == 0, errors
    stdout = "".join(lines) + rest
    assert "fakeredis" in stdout  # the stand-in store is named on screen
    transitions = [line for line in stdout.splitlines() if " -> " in line]
    assert transitions, stdout
    assert "stopped:" in stdout
    assert "status_changed" in stdout.rsplit("stopped:", 1)[1]


def test_config_schema_describes_every_section() -> None:
    """`absorb-bridge config-schema` prints a JSON Schema that names every top-level section."""
    done = subprocess.run([*BRIDGE, "config-schema"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert set(schema["properties"]) == {
        "absorb",
        "redis",
        "feeds",
        "sinks",
        "routes",
        "http",
        "console",
    }
    assert "interval" in schema["$defs"]["FeedConfig"]["properties"]


def test_check_config_masks_credentials_given_literally(tmp_path: Path) -> None:
    """check-config shows no password inside a URL and no token in a query string, even
    when the config holds them literally: each appears masked, the rest of the URL kept."""
    secret = "whsec_" + base64.b64encode(b"check-config-signing-key").decode()
    hidden = {
        "redis": "r3dis-Pa55",
        "amqp": "amqp-Pa55",
        "http basic": "http-Pa55",
        "query token": "tok-7f3a9c",
        "query sig": "sig-51e0b2",
        "base_url token": "abs-tok-88d1",
        "header url token": "hdr-tok-42aa",
    }
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""
absorb:
  base_url: "https://tenant.example/api/rest/v2?access_token={hidden["base_url token"]}"
  api_key: key-literal-0000
  username: admin
  password: pw-literal-0000
redis:
  url: "redis://:{hidden["redis"]}@127.0.0.1:6379/0"
feeds:
  - {{name: courses, resource: course_enrollments}}
sinks:
  - name: hr
    type: http
    url: "https://hook:{hidden["http basic"]}@hr.example/hook?token={hidden["query token"]}&team=7"
    secret: "{secret}"
    headers: {{X-Callback: "https://cb.example/x?sig={hidden["header url token"]}"}}
  - name: mq
    type: amqp
    url: "amqp://bridge:{hidden["amqp"]}@mq.example:5672/vh?sig={hidden["query sig"]}"
routes:
  - sinks: [hr, mq]
"""
    )
    done = subprocess.run(
        [*BRIDGE, "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    for what, value in hidden.items():
        assert value not in done.stdout + done.stderr, f"{what} shown"
    for literal in ("key-literal-0000", "pw-literal-0000", secret):
        assert literal not in done.stdout + done.stderr
    assert "redis://:***@127.0.0.1:6379/0" in done.stdout
    assert "https://hook:***@hr.example/hook?token=***&team=7" in done.stdout
    assert "amqp://bridge:***@mq.example:5672/vh?sig=***" in done.stdout
    assert "https://tenant.example/api/rest/v2?access_token=***" in done.stdout
    assert "https://cb.example/x?sig=***" in done.stdout
