"""The warm pool: each sandbox used once, the request's limits enforced, none outliving its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.sandbox.gvisor.backend import GVisorBackend
from sandq.sandbox.gvisor.sandbox import SANDBOX_PREFIX
from tests.conftest import RedisServer, WorkerProcess, listed_sandboxes, make_settings


def running_sandboxes(settings: Settings) -> list[str]:
    out = subprocess.run(
        ["runsc", "--root", str(settings.runsc_root), "list"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if "running" in line]


def runsc_processes(names: list[str]) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if any(name in line for name in names)]


def wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[GVisorBackend]:
    settings = make_settings("redis://unused", tmp_path, warm_pool_size=2)
    b = GVisorBackend(settings)
    b.start()
    yield b
    b.close()
    assert running_sandboxes(settings) == []
    assert [p for p in settings.bundle_dir.iterdir() if p.name.startswith(SANDBOX_PREFIX)] == []


def run_warm(backend: GVisorBackend, code: str, **fields: object) -> object:
    assert backend.pool is not None
    wait_for(lambda: backend.pool is not None and backend.pool.ready_count() == backend.pool.size)
    before = backend.warm_starts
    report = backend.run("exec", ExecutionRequest(code=code, **fields))  # type: ignore[arg-type]
    assert backend.warm_starts == before + 1, "the execution did not use a warm sandbox"
    return report


def test_warm_sandboxes_are_never_reused(backend: GVisorBackend) -> None:
    code = "import os\nprint(os.path.exists('/tmp/marker'))\nopen('/tmp/marker', 'w').write('x')"
    reports = [run_warm(backend, code) for _ in range(4)]
    assert [r.stdout for r in reports] == ["False\n"] * 4  # type: ignore[attr-defined]
    names = [r.sandbox_name for r in reports]  # type: ignore[attr-defined]
    assert len(set(names)) == 4
    wait_for(lambda: not set(names) & set(running_sandboxes(backend.settings)))


def test_warm_sandbox_enforces_the_timeout_of_its_request(backend: GVisorBackend) -> None:
    report = run_warm(backend, "while True: pass", timeout_seconds=1)
    assert report.status is Status.TIMED_OUT  # type: ignore[attr-defined]


def test_warm_sandbox_enforces_the_output_limit_of_its_request(backend: GVisorBackend) -> None:
    report = run_warm(backend, "print('y' * 100_000)", max_output_bytes=4096)
    assert report.status is Status.OUTPUT_LIMIT_EXCEEDED  # type: ignore[attr-defined]
    assert len(report.stdout) == 4096  # type: ignore[attr-defined]


def test_warm_sandbox_enforces_the_memory_limit_of_its_shape(backend: GVisorBackend) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024 * 1024))"
    report = run_warm(backend, code)  # the default shape: 512Mi
    assert report.status is Status.OOM_KILLED  # type: ignore[attr-defined]


def test_another_shape_starts_cold_with_its_own_limits(backend: GVisorBackend) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))"
    before = backend.cold_starts
    report = backend.run("exec", ExecutionRequest(code=code, mem_limit="96Mi", mem_requested="64Mi"))
    assert backend.cold_starts == before + 1
    assert report.status is Status.OOM_KILLED


def test_no_warm_sandbox_outlives_a_killed_worker(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = make_settings(
        redis_server.url, tmp_path, warm_pool_size=2, concurrency=2, sweep_interval_seconds=1
    )
    client = Client(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready(client)
        wait_for(lambda: len(running_sandboxes(settings)) >= 4)  # 2 pool processes x 2 warm sandboxes
        names = running_sandboxes(settings)
        assert all(n.startswith(SANDBOX_PREFIX) for n in names)
        _kill_worker_tree(worker)
        wait_for(lambda: runsc_processes(names) == [], timeout=30)  # no sandbox process outlives it
        # A new worker sweeps whatever state the dead one left.
        worker = WorkerProcess(settings, tmp_path / "worker2.log")
        worker.wait_ready(client)
        result = client.run(ExecutionRequest(code="print('fresh')"), timeout=120)
        assert result.status is Status.SUCCEEDED
        listed = listed_sandboxes(settings)
        assert not set(names) & set(listed)
        # A dead worker's leftovers are swept by the new worker's processes (at start and periodically).
        wait_for(lambda: not any((settings.bundle_dir / n).exists() for n in names), timeout=30)
    finally:
        worker.stop()
        client.close()


def _kill_worker_tree(worker: WorkerProcess) -> None:
    """SIGKILL the worker and its pool processes at once, as a crash or OOM would."""
    children = subprocess.run(
        ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in [worker.proc.pid, *map(int, children)]:
        os.kill(pid, signal.SIGKILL)
    worker.proc.wait()


def test_the_pool_refills_only_between_executions(backend: GVisorBackend) -> None:
    pool = backend.pool
    assert pool is not None
    wait_for(lambda: pool.ready_count() == pool.size)
    with pool.busy():
        taken = [pool.take(), pool.take()]
        time.sleep(1)
        assert pool.ready_count() == 0
        assert pool.take() is None, "a refill started while an execution ran"
    for sandbox in taken:
        assert sandbox is not None
        sandbox.remove()
    wait_for(lambda: pool.ready_count() == pool.size)


def test_an_empty_pool_hands_over_the_sandbox_it_is_booting(backend: GVisorBackend) -> None:
    pool = backend.pool
    assert pool is not None
    wait_for(lambda: pool.ready_count() == pool.size)
    with pool.busy():
        taken = [pool.take(), pool.take()]
    wait_for(lambda: pool._booting is not None, timeout=10)
    before = (backend.warm_starts, backend.cold_starts)
    report = backend.run("exec", ExecutionRequest(code="print('booted for me')"))
    assert (backend.warm_starts, backend.cold_starts) == (before[0] + 1, before[1])
    assert report.status is Status.SUCCEEDED
    assert report.stdout == "booted for me\n"
    for sandbox in taken:
        assert sandbox is not None
        sandbox.remove()
