"""Fixtures of the gateway tests: settings, an async Redis client, a local webhook receiver, and the
whole stack (Redis, a gVisor worker, ``sandq serve``)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from sandq.client.client import Client
from sandq.gateway.settings import GatewaySettings
from sandq.settings import Settings
from tests.conftest import REPO, RedisServer, WorkerProcess, free_port, make_settings, settings_env


def gateway_settings(**overrides: object) -> GatewaySettings:
    """Settings with a fresh server secret and quick webhook retries.

    The timeouts are generous: a test that counts the requests its receiver got needs every attempt
    to reach it, also on a busy machine (with 1 s each, a CI run once counted three attempts and
    the receiver two: only a failed connection or a timeout counts one that never arrived). A test
    of timeouts sets its own.
    """
    values: dict[str, object] = {
        "secret": secrets.token_hex(32),
        "webhook_backoff_seconds": 0.05,
        "webhook_backoff_max_seconds": 0.2,
        "webhook_connect_timeout_seconds": 5,
        "webhook_read_timeout_seconds": 5,
        "webhook_poll_seconds": 0.02,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def namespace() -> str:
    return f"gw-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def aredis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@dataclass
class Answer:
    """What the receiver answers to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP(S) server on 127.0.0.1 that records requests and plays scripted answers (then 200)."""

    def __init__(self, answers: list[Answer], tls: ssl.SSLContext | None = None) -> None:
        self.answers = list(answers)
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.received.append(Received(self.path, headers, body))
                answer = receiver.answers.pop(0) if receiver.answers else Answer()
                time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "https" if tls else "http"
        if tls:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[type[Receiver]]:
    started: list[Receiver] = []

    class Started(Receiver):
        def __init__(self, answers: list[Answer], tls: ssl.SSLContext | None = None) -> None:
            super().__init__(answers, tls)
            started.append(self)

    yield Started
    for receiver in started:
        receiver.close()


# ---- the whole stack: real Redis, a real gVisor worker, `sandq serve` as a process ----------------

TIGHT = "tight"
"""A tenant allowed one running and one queued execution (the quota test)."""


@dataclass
class Stack:
    """A running gateway in front of a running worker, and how to make keys for it."""

    url: str
    env: dict[str, str]
    settings: Settings
    log: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sandq", *args], env=self.env, capture_output=True, text=True,
            timeout=60, check=False,
        )

    def new_key(self, tenant: str) -> str:
        made = self.cli("keys", "create", "--tenant", tenant)
        assert made.returncode == 0, made.stderr
        return made.stdout.splitlines()[-1]

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


@pytest.fixture(scope="session")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0 or shutil.which("runsc") is None:
        pytest.fail("the gateway's end-to-end tests need root and runsc: run `make test`")
    base = tmp_path_factory.mktemp("gateway-stack")
    settings = make_settings(
        redis_server.url, base, warm_pool_min=1, warm_pool_max=1, concurrency=3,
        tenant_overrides={TIGHT: {"max_in_flight": 1, "max_queued": 1}},
    )
    env = settings_env(settings)
    env.update({
        "SANDQ_GATEWAY_SECRET": secrets.token_hex(32),
        "SANDQ_GATEWAY_RATE_LIMIT": "40/second;5000/minute",
        "SANDQ_GATEWAY_WEBHOOK_ALLOW_HOSTS": '["localhost"]',
        "SANDQ_GATEWAY_WEBHOOK_BACKOFF_SECONDS": "0.3",
        "SANDQ_GATEWAY_WEBHOOK_POLL_SECONDS": "0.1",
        "SANDQ_GATEWAY_POLL_SECONDS": "0.2",
    })
    client = Client(settings)
    worker = WorkerProcess(settings, base / "worker.log")
    port = free_port()
    log = base / "gateway.log"
    gateway = subprocess.Popen(
        [sys.executable, "-m", "sandq", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
    )
    try:
        worker.wait_ready(client)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert gateway.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Stack(url, env, settings, log)
    finally:
        gateway.terminate()
        try:
            gateway.wait(30)  # a prompt, clean shutdown is part of what is tested
        finally:
            if gateway.poll() is None:
                gateway.kill()
                gateway.wait()
            worker.stop()
            client.close()
