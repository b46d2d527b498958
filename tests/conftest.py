"""Shared fixtures: a real redis-server, a real Celery worker process, a client."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandq.client.client import Client, ExecutionHandle
from sandq.contract import ExecutionRequest
from sandq.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CANARY = "SANDQ_TEST_HOST_SECRET"


FAST_SUITES = ("unit", "docs", "integration/deploy")
"""The suites of the fast tier (``pytest -m "not slow"``): pure code, documents and manifests.

Every other suite needs real parts (a redis-server, worker processes, gVisor sandboxes, the API
stand-in) and is marked ``slow`` here, so that no test file has to remember it.
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        suite = Path(item.path).relative_to(tests_dir).as_posix()
        if not suite.startswith(tuple(f"{fast}/" for fast in FAST_SUITES)):
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server process on a free port, in its own directory."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def make_settings(redis_url: str, base: Path, **overrides: object) -> Settings:
    """Settings for tests: their own Redis, queue and runsc state."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "queue": f"sandq-test-{uuid.uuid4().hex[:8]}",
        "runsc_root": base / "runsc",
        "bundle_dir": base / "bundles",
        "concurrency": 4,
        "metrics_port": 0,  # no test worker takes the shared default port 9808
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess see ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDQ_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"SANDQ_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def run_example(name: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` offline against the queue of ``settings``; it must exit 0."""
    model_keys = {"GOOGLE_API_KEY", "OPENAI_API_KEY"}  # no real model: the scripted one stands in
    env = {k: v for k, v in os.environ.items() if k not in model_keys and not k.startswith("SANDQ_")}
    env |= {"SANDQ_REDIS_URL": settings.redis_url, "SANDQ_QUEUE": settings.queue}
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        cwd="/",
    )


def listed_sandboxes(settings: Settings) -> list[str]:
    """The sandbox ids ``runsc list`` shows under the settings' state directory."""
    return subprocess.run(
        ["runsc", "--root", str(settings.runsc_root), "list", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


class WorkerProcess:
    """A real worker process (``sandq worker`` unless ``args`` say otherwise)."""

    ready_seconds = 60.0
    stop_seconds = 60.0

    def __init__(
        self,
        settings: Settings,
        log: Path,
        extra_env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("-m", "sandq", "worker", "--loglevel", "INFO"),
    ) -> None:
        env = settings_env(settings)
        env.update(extra_env or {})
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO
        )

    def wait_ready(self, client: Client | None = None, timeout: float | None = None) -> None:
        """Wait until the worker answers a ping through ``client``, or else logs that it is ready."""
        deadline = time.monotonic() + (timeout or self.ready_seconds)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            if client is not None and client.app.control.ping(timeout=0.5):
                return
            if client is None:
                if b" ready." in self.log.read_bytes():
                    return
                time.sleep(0.1)
        raise RuntimeError(f"worker not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL after ``stop_seconds``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def settings(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(redis_server.url, tmp_path_factory.mktemp("sandq"))


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[Client]:
    c = Client(settings)
    yield c
    c.close()


@pytest.fixture(scope="session")
def worker(
    settings: Settings, client: Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    if os.geteuid() != 0 or shutil.which("runsc") is None:
        pytest.fail("the gVisor tests need root and runsc: run `make test`, which installs it")
    proc = WorkerProcess(
        settings, tmp_path_factory.mktemp("worker") / "worker.log", {CANARY: "leaked-if-visible"}
    )
    proc.wait_ready(client)
    yield proc
    proc.stop()


class RecordingClient(Client):
    """A real client that also keeps the requests it submits, and the options of each."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.submitted: list[ExecutionRequest] = []
        self.options: list[dict[str, Any]] = []

    def submit(self, request: ExecutionRequest, **options: Any) -> ExecutionHandle:  # type: ignore[override]
        self.submitted.append(request)
        self.options.append(options)
        return super().submit(request, **options)


@pytest.fixture
def recording_client(settings: Settings, worker: WorkerProcess) -> Iterator[RecordingClient]:
    """A recording client on the session's queue, served by the real worker."""
    c = RecordingClient(settings)
    yield c
    c.close()


@pytest.fixture(scope="session")
def idle_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server that no worker uses."""
    server = RedisServer(tmp_path_factory.mktemp("idle-redis"))
    yield server
    server.stop()


@pytest.fixture
def idle_client(idle_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A client whose queue no worker consumes."""
    client = Client(make_settings(idle_redis.url, tmp_path_factory.mktemp("idle"), max_queued=1))
    yield client
    client.close()
