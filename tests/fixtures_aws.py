"""Session fixtures for a local SQS-compatible server (moto).

`sqs_endpoint` is `ABSORB_BRIDGE_TEST_SQS_URL` when set (any SQS-compatible
server, e.g. a moto or ElasticMQ container), else a moto server started here in
its own process on a free loopback port. Clients in tests use the fake
credentials below explicitly, so nothing reads or needs real AWS settings.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

AWS_REGION = "us-east-1"
AWS_ACCESS_KEY_ID = "AKIDTESTTESTTEST0000"
AWS_SECRET_ACCESS_KEY = "test-secret-key-do-not-leak-0123456789"
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
    "AWS_DEFAULT_REGION": AWS_REGION,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP answer of any kind: the server is up
    except OSError:
        return False


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """The URL of an SQS-compatible server: the one the test command gave, or moto started here."""
    given = os.environ.get("ABSORB_BRIDGE_TEST_SQS_URL")
    if given:
        yield given.rstrip("/")
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # Fake credentials for the server process only; this process's environment is left alone.
    env = {**os.environ, **_FAKE_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("moto's server did not start; is moto[server] installed?")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def sqs_client(sqs_endpoint: str) -> AsyncIterator[Any]:
    """An aiobotocore SQS client of `sqs_endpoint` with the fake credentials (to make queues)."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs",
        region_name=AWS_REGION,
        endpoint_url=sqs_endpoint,
        aws_access_key_id=AWS_ACCESS_KEY_ID,
        aws_secret_access_key=AWS_SECRET_ACCESS_KEY,
    ) as client:
        yield client
