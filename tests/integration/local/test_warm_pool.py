"""The warm pool: each sandbox used once, the request's limits enforced, none outliving its worker,
sized to demand, refilled as soon as a sandbox is taken, and a reserve left to interactive work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.broker.routing import Priority
from sandq.contract import SandboxReport
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.gvisor import cgroup
from sandq.sandbox.gvisor.backend import GVisorBackend
from sandq.sandbox.gvisor.booting import BootSlots, Rank, cores
from sandq.sandbox.gvisor.bundle import Shape
from sandq.sandbox.gvisor.pool import WarmPool
from sandq.sandbox.gvisor.sandbox import SANDBOX_PREFIX, LocalSandbox
from sandq.sandbox.metrics import Start
from tests.conftest import RedisServer, WorkerProcess, listed_sandboxes, make_settings

DEFAULT_SHAPE = Shape.of(ExecutionRequest(code="pass"))
WEIGHTS = [("interactive", cgroup.INTERACTIVE_SHARES), ("batch", cgroup.BATCH_SHARES)]


def running_sandboxes(settings: Settings) -> list[str]:
    out = subprocess.run(
        ["runsc", "--root", str(settings.runsc_root), "list"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if "running" in line]


def runsc_processes(names: list[str]) -> list[str]:
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if any(name in line for name in names)]


def wait_for(predicate: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def cpu(name: str) -> tuple[int, int]:
    """The CPU weight and quota of a sandbox's cgroup."""
    directory = cgroup.directory(name)
    return int((directory / "cpu.shares").read_text()), int((directory / "cpu.cfs_quota_us").read_text())


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[GVisorBackend]:
    settings = make_settings("redis://unused", tmp_path, warm_pool_min=2, warm_pool_max=4)
    b = GVisorBackend(settings)
    b.start()
    yield b
    b.close()
    assert running_sandboxes(settings) == []
    assert [p for p in settings.bundle_dir.iterdir() if p.name.startswith(SANDBOX_PREFIX)] == []


def starts(kind: Start) -> float:
    """``sandq_sandbox_starts_total{start=kind}`` of this process (the backends here run in it)."""
    return REGISTRY.get_sample_value("sandq_sandbox_starts_total", {"start": kind}) or 0.0


def warm_and_cold() -> tuple[float, float]:
    """Sandboxes started so far: warm (ready or booting when taken), cold."""
    return starts("ready") + starts("booting"), starts("cold")


def the_pool(backend: GVisorBackend) -> WarmPool:
    assert backend.pool is not None
    return backend.pool


def run_warm(
    backend: GVisorBackend, code: str, priority: Priority = "interactive", **fields: object
) -> SandboxReport:
    pool = the_pool(backend)
    wait_for(lambda: pool.ready_count() >= 1)
    before = warm_and_cold()
    report = backend.run("exec", ExecutionRequest(code=code, **fields), priority=priority)  # type: ignore[arg-type]
    assert warm_and_cold() == (before[0] + 1, before[1]), "the execution did not use a warm sandbox"
    return report


def test_warm_sandboxes_are_never_reused(backend: GVisorBackend) -> None:
    code = "import os\nprint(os.path.exists('/tmp/marker'))\nopen('/tmp/marker', 'w').write('x')"
    reports = [run_warm(backend, code) for _ in range(4)]
    assert [r.stdout for r in reports] == ["False\n"] * 4
    names = [r.sandbox_name for r in reports]
    assert len(set(names)) == 4
    wait_for(lambda: not set(names) & set(running_sandboxes(backend.settings)))


def test_warm_sandbox_enforces_the_timeout_of_its_request(backend: GVisorBackend) -> None:
    report = run_warm(backend, "while True: pass", timeout_seconds=1)
    assert report.status is Status.TIMED_OUT


def test_warm_sandbox_enforces_the_output_limit_of_its_request(backend: GVisorBackend) -> None:
    report = run_warm(backend, "print('y' * 100_000)", max_output_bytes=4096)
    assert report.status is Status.OUTPUT_LIMIT_EXCEEDED
    assert len(report.stdout) == 4096


def test_warm_sandbox_enforces_the_memory_limit_of_its_shape(backend: GVisorBackend) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024 * 1024))"
    report = run_warm(backend, code)  # the default shape: 512Mi
    assert report.status is Status.OOM_KILLED


def limits_seen_by_the_code(
    backend: GVisorBackend, request: ExecutionRequest, priority: Priority
) -> tuple[int, int]:
    """Run ``request`` (whose code prints, then sleeps); its sandbox's CPU weight and quota, read from
    the host as soon as the code has printed: the limits the code runs under."""
    seen: list[tuple[int, int]] = []

    def on_output(stream: str, data: bytes) -> None:
        if not seen:
            (sandbox,) = backend._running.values()
            seen.append(cpu(sandbox.name))

    report = backend.run("exec", request, on_output, priority=priority)
    assert report.status is Status.SUCCEEDED
    (limits,) = seen
    return limits


RUNNING = "print('running', flush=True)\nimport time\ntime.sleep(1)"


@pytest.mark.parametrize(("priority", "shares"), WEIGHTS)
def test_a_warm_sandbox_boots_at_the_lowest_weight_and_runs_its_job_under_its_cpu_quota(
    backend: GVisorBackend, priority: Priority, shares: int
) -> None:
    pool = the_pool(backend)
    wait_for(lambda: pool.ready_count() >= 1)
    idle = [name for name in running_sandboxes(backend.settings) if cgroup.joined(name)]
    assert idle and all(cpu(name) == (cgroup.BOOT_SHARES, -1) for name in idle)  # booted: no quota yet
    before = warm_and_cold()
    limits = limits_seen_by_the_code(backend, ExecutionRequest(code=RUNNING), priority)
    assert warm_and_cold() == (before[0] + 1, before[1])
    assert limits == (shares, 50_000)  # the default shape's 500m, set before the job was written


def test_another_shape_starts_cold_with_its_own_limits(backend: GVisorBackend) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))"
    before = warm_and_cold()
    report = backend.run("exec", ExecutionRequest(code=code, mem_limit="96Mi", mem_requested="64Mi"))
    assert warm_and_cold() == (before[0], before[1] + 1)
    assert report.status is Status.OOM_KILLED


@pytest.mark.parametrize(("priority", "shares"), WEIGHTS)
def test_a_cold_sandbox_boots_at_its_works_weight_and_runs_under_its_own_quota(
    backend: GVisorBackend, priority: Priority, shares: int
) -> None:
    request = ExecutionRequest(code=RUNNING, cpu_limit="250m", cpu_requested="250m")
    booting = backend._sandbox_for(request, priority)
    try:
        config = json.loads((booting.bundle / "config.json").read_text())
        assert config["linux"]["resources"]["cpu"] == {"shares": shares}  # its boot has no quota
    finally:
        booting.remove()
    before = warm_and_cold()
    limits = limits_seen_by_the_code(backend, request, priority)
    assert warm_and_cold() == (before[0], before[1] + 1)
    assert limits == (shares, 25_000)


@pytest.mark.parametrize("warm", [True, False])
def test_a_sandbox_whose_quota_cannot_be_set_never_gets_its_job(
    backend: GVisorBackend, monkeypatch: pytest.MonkeyPatch, warm: bool
) -> None:
    def refuse(name: str, quota_us: int, period_us: int) -> None:
        raise OSError("no such cgroup")

    monkeypatch.setattr(cgroup, "set_quota", refuse)
    if warm:
        wait_for(lambda: the_pool(backend).ready_count() >= 1)
    printed: list[bytes] = []
    before = warm_and_cold()
    request = ExecutionRequest(code="print('ran', flush=True)", cpu_limit="500m" if warm else "250m")
    with pytest.raises(InfrastructureFault, match="could not set the CPU quota"):
        backend.run("exec", request, lambda stream, data: printed.append(data))
    assert warm_and_cold() == (before[0] + warm, before[1] + (not warm))
    assert printed == []
    assert not backend._running


class CountedSlots(BootSlots):
    """Boot slots that note the most ever taken at once."""

    peak = 0

    def acquire(self, rank: Rank) -> Callable[[], None]:
        release = super().acquire(rank)
        self.peak = max(self.peak, self.booting())
        return release


def test_no_more_sandboxes_boot_at_once_than_the_limit_and_every_request_runs(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path, warm_pool_max=0, max_booting=1)
    backend = GVisorBackend(settings)
    backend.boots = slots = CountedSlots(settings.max_booting)
    backend.start()
    try:
        request = ExecutionRequest(code="print('ran')")
        cold = starts("cold")
        with ThreadPoolExecutor(3) as pool:
            reports = list(pool.map(lambda i: backend.run(f"exec-{i}", request), range(3)))
        assert [r.stdout for r in reports] == ["ran\n"] * 3
        assert starts("cold") == cold + 3
        assert slots.peak == 1
        assert slots.booting() == 0  # every slot went back once its sandbox was ready
    finally:
        backend.close()


def test_the_pool_refills_as_soon_as_a_sandbox_is_taken(backend: GVisorBackend) -> None:
    pool = the_pool(backend)
    wait_for(lambda: pool.ready_count() == pool.target())
    taken = pool.take("batch")
    assert taken is not None
    try:  # the taken sandbox has not run anything yet, and its replacement is under way
        wait_for(lambda: pool.ready_count() + pool.booting_count() >= pool.target(), timeout=5)
        pooled = [r.sandbox.name for r in pool._ready] + [b.sandbox.name for b in pool._booting]
        assert taken.name not in pooled
    finally:
        taken.remove()


def pool_gauge(state: str) -> float | None:
    return REGISTRY.get_sample_value("sandq_warm_pool_sandboxes", {"state": state})


def test_the_pool_gauges_follow_the_pool_and_every_boot_is_observed(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path, warm_pool_min=2, warm_pool_max=4)
    boots = REGISTRY.get_sample_value("sandq_sandbox_boot_seconds_count") or 0.0
    backend = GVisorBackend(settings)
    backend.start()
    pool = the_pool(backend)
    try:
        wait_for(lambda: pool.ready_count() == pool.target() == 2)
        wait_for(lambda: (pool_gauge("ready"), pool_gauge("booting"), pool_gauge("target")) == (2, 0, 2))
        assert REGISTRY.get_sample_value("sandq_sandbox_boot_seconds_count") == boots + 2
    finally:
        backend.close()
    assert (pool_gauge("ready"), pool_gauge("booting"), pool_gauge("target")) == (0, 0, 0)


def test_an_empty_pool_hands_over_the_sandbox_it_is_booting_and_boots_one_more_ahead(
    backend: GVisorBackend,
) -> None:
    pool = the_pool(backend)
    wait_for(lambda: pool.ready_count() == pool.target())
    taken = [pool.take("interactive") for _ in range(pool.ready_count())]
    try:
        wait_for(lambda: pool.booting_count() > 0 and pool.ready_count() == 0, timeout=10)
        assert backend.boots.ahead == cores()  # every request so far found a sandbox ready
        before = starts("booting"), starts("ready"), starts("cold")
        report = backend.run("exec", ExecutionRequest(code="print('booted for me')"))
        assert (starts("booting"), starts("ready"), starts("cold")) == (before[0] + 1, before[1], before[2])
        assert report.status is Status.SUCCEEDED
        assert report.stdout == "booted for me\n"
        wait_for(lambda: backend.boots.ahead == cores() + 1)  # the refills fell behind: one more ahead
    finally:
        for sandbox in taken:
            assert sandbox is not None
            sandbox.remove()


def test_a_set_max_booting_ahead_is_kept_when_the_pool_falls_behind(tmp_path: Path) -> None:
    settings = make_settings(
        "redis://unused", tmp_path, warm_pool_min=1, warm_pool_max=1, max_booting_ahead=1
    )
    slots = BootSlots(4, ahead=1)
    pool = WarmPool(settings, DEFAULT_SHAPE, slots)
    try:
        wait_for(lambda: pool.ready_count() == 1)
        taken = [pool.take("interactive"), pool.take("interactive")]  # the second finds none ready
        try:
            wait_for(lambda: pool.ready_count() == 1)  # the refill loop has gone round since
            assert slots.ahead == 1
        finally:
            for sandbox in taken:
                if sandbox is not None:
                    sandbox.remove()
    finally:
        pool.close()


def test_batch_work_leaves_the_reserved_sandbox_to_interactive_work(tmp_path: Path) -> None:
    settings = make_settings(
        "redis://unused", tmp_path, warm_pool_min=1, warm_pool_max=1, warm_pool_reserve=1
    )
    pool = WarmPool(settings, DEFAULT_SHAPE, BootSlots(4))
    try:
        wait_for(lambda: pool.ready_count() == 1)
        first = pool.take("interactive")  # interactive work is around from now on
        assert first is not None
        first.remove()
        wait_for(lambda: pool.ready_count() == 1)
        assert pool.take("batch") is None, "batch work took the sandbox kept for interactive work"
        reserved = pool.take("interactive")
        assert reserved is not None
        reserved.remove()
    finally:
        pool.close()


def test_the_pool_grows_with_arrivals_and_shrinks_back_to_its_floor_when_idle(tmp_path: Path) -> None:
    settings = make_settings(
        "redis://unused", tmp_path, warm_pool_min=1, warm_pool_max=6, warm_pool_reserve=0,
        warm_pool_idle_seconds=4,
    )
    pool = WarmPool(settings, DEFAULT_SHAPE, BootSlots(16))  # taken ones never run: they keep their slots
    taken: list[LocalSandbox] = []
    try:
        wait_for(lambda: pool.ready_count() == 1)
        for _ in range(8):
            sandbox = pool.take("batch")
            if sandbox is not None:
                taken.append(sandbox)
        grown = pool.target()
        assert grown > 1
        wait_for(lambda: pool.ready_count() + pool.booting_count() >= grown, timeout=5)
        wait_for(lambda: pool.target() == 1 and pool.ready_count() + pool.booting_count() == 1, timeout=60)
    finally:
        for sandbox in taken:
            sandbox.remove()
        pool.close()


def test_no_sandbox_outlives_a_worker_killed_with_sigkill(tmp_path: Path, redis_server: RedisServer) -> None:
    """The worker owns the pool; SIGKILL of it takes every sandbox down, warm or running a job."""
    settings = make_settings(
        redis_server.url, tmp_path, warm_pool_min=2, concurrency=2, sweep_interval_seconds=1
    )
    client = Client(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready(client)
        spin = ExecutionRequest(code="print('spinning', flush=True)\nwhile True: pass", timeout_seconds=300)
        client.submit(spin)
        wait_for(lambda: len(running_sandboxes(settings)) >= 3)  # one running the job, two warm
        names = running_sandboxes(settings)
        assert all(n.startswith(SANDBOX_PREFIX) for n in names)
        assert runsc_processes(names)  # (ps's lines are full width: the names are at their ends)
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        wait_for(lambda: runsc_processes(names) == [], timeout=30)  # none outlives it, not even the busy one
        # A new worker sweeps whatever state the dead one left.
        worker = WorkerProcess(settings, tmp_path / "worker2.log")
        worker.wait_ready(client)
        result = client.run(ExecutionRequest(code="print('fresh')"), timeout=120)
        assert result.status is Status.SUCCEEDED
        assert not set(names) & set(listed_sandboxes(settings))
        wait_for(lambda: not any((settings.bundle_dir / n).exists() for n in names), timeout=30)
    finally:
        worker.stop()
        client.close()
