"""The local gVisor backend: one fresh ``runsc`` sandbox per execution, no cluster."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from sandq.broker.routing import Priority
from sandq.contract import ExecutionRequest, SandboxReport, Status, now
from sandq.periodic import Periodic
from sandq.sandbox.backend import Backend, InfrastructureFault, OnOutput
from sandq.sandbox.gvisor import cgroup
from sandq.sandbox.gvisor.booting import BootSlots, Rank, cores, default_limit
from sandq.sandbox.gvisor.bundle import Shape, sandbox_env
from sandq.sandbox.gvisor.pool import WarmPool
from sandq.sandbox.gvisor.sandbox import Capture, LocalSandbox, sweep_orphans
from sandq.sandbox.gvisor.streams import BOOT_SECONDS
from sandq.sandbox.metrics import record_start
from sandq.sandbox.protocol import ReportUnreadable, Stop, job_document, read_report, report_marker
from sandq.settings import Settings

log = logging.getLogger(__name__)

KILLED_BY_SIGKILL = 137


class GVisorBackend(Backend):
    """Runs each request in its own sandbox: a warm one of the default shape, else a cold one."""

    name = "gvisor"
    streams_output = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: dict[str, LocalSandbox] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        settings.runsc_root.mkdir(parents=True, exist_ok=True)
        settings.bundle_dir.mkdir(parents=True, exist_ok=True)
        ahead = settings.max_booting_ahead or cores()  # the pool paces it to demand when not set
        self.boots = BootSlots(settings.max_booting or default_limit(), ahead)
        self.weighted = cgroup.supported()
        """A sandbox boots without its CPU quota, which is set once it is ready (cgroups v1)."""
        self.pool: WarmPool | None = None
        self._sweeper = Periodic("sandq-sweep", settings.sweep_interval_seconds, self.sweep)
        self._reaper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandq-reaper")

    def start(self) -> None:
        """Start the warm pool (unless ``warm_pool_max`` is 0) and the periodic sweep of dead workers'
        sandboxes.

        Checks the sandbox environment first (``InfrastructureFault`` if it is unusable).
        """
        sandbox_env(self.settings)
        if self.settings.warm_pool_max and self.pool is None:
            self.pool = WarmPool(self.settings, Shape.of(ExecutionRequest(code="pass")), self.boots)
        self._sweeper.start()

    def _report_cap(self) -> int:
        return self.settings.max_output_files_bytes * 4 // 3 + 64 * 1024

    def _sandbox_for(self, request: ExecutionRequest, priority: Priority) -> LocalSandbox:
        shape = Shape.of(request)
        if self.pool is not None and shape == self.pool.shape:
            warm = self.pool.take(priority)
            if warm is not None:
                return warm
        interactive = priority == "interactive"
        slot = self.boots.acquire(Rank.INTERACTIVE if interactive else Rank.BATCH)
        shares = cgroup.shares_of(interactive)
        sandbox = LocalSandbox(self.settings, shape, shares=shares, quota_when_ready=self.weighted, slot=slot)
        record_start("cold")
        return sandbox

    def run(
        self, execution_id: str, request: ExecutionRequest, on_output: OnOutput | None = None,
        *, priority: Priority = "interactive",
    ) -> SandboxReport:
        """Run ``request`` in a sandbox used for nothing else, then remove every trace of it."""
        try:
            sandbox = self._sandbox_for(request, priority)
        except OSError as error:
            raise InfrastructureFault(f"could not start a sandbox: {error}") from error
        with self._lock:
            self._running[execution_id] = sandbox
        started = now()
        capture: Capture | None = None
        marker = report_marker()
        try:
            capture = sandbox.execute(
                job_document(request, self.settings, marker),
                marker,
                (request.max_output_bytes, self._report_cap()),
                request.timeout_seconds,
                on_output,
            )
        finally:
            with self._lock:
                self._running.pop(execution_id, None)
                cancelled = execution_id in self._cancelled
                self._cancelled.discard(execution_id)
            if capture is not None and capture.code is None:
                self._reaper.submit(sandbox.remove)  # reported and exiting: tear down off the hot path
            else:
                sandbox.remove()
        if cancelled:
            report = SandboxReport(status=Status.CANCELLED, error="cancelled while running")
        else:
            report = _report(capture)
        return report.model_copy(
            update={"sandbox_name": sandbox.name, "started_at": started, "finished_at": now()}
        )

    def cancel(self, execution_id: str) -> bool:
        """Kill the sandbox of a running execution; it ends as ``cancelled``.

        False while runsc has not created the sandbox yet (a cold start): the caller tries again.
        """
        with self._lock:
            sandbox = self._running.get(execution_id)
            if sandbox is None:
                return False
            self._cancelled.add(execution_id)
        if sandbox.kill():
            return True
        with self._lock:
            self._cancelled.discard(execution_id)
        return False

    def sweep(self) -> None:
        """Remove sandboxes whose owning worker process is gone."""
        for name in sweep_orphans(self.settings):
            log.info("removed leftover sandbox %s", name)

    def close(self) -> None:
        """Drain the warm pool, finish every pending teardown, and sweep once more (what processes
        killed meanwhile left behind)."""
        self._sweeper.stop()
        if self.pool is not None:
            self.pool.close()
        self._reaper.shutdown(wait=True)
        self.sweep()


def _report(capture: Capture) -> SandboxReport:
    """How the sandbox ended: the runner's report with the streams, or else what its exit tells."""
    streams = capture.streams
    printed = streams.printed.fields()
    if streams.report is not None:
        try:
            return read_report(streams.report, streams.printed)
        except ReportUnreadable:
            # Only the program, which shares the runner's process, can have spoilt the report:
            # its own failure, never retried as an infrastructure fault.
            spoilt = "the program overwrote its own report"
            return SandboxReport(status=Status.FAILED, error=spoilt, **printed)
    if streams.stop is Stop.TIMED_OUT:
        return SandboxReport(status=Status.TIMED_OUT, exit_code=KILLED_BY_SIGKILL, **printed)
    if streams.stop is Stop.OUTPUT_LIMIT:
        return SandboxReport(status=Status.OUTPUT_LIMIT_EXCEEDED, exit_code=KILLED_BY_SIGKILL, **printed)
    if not streams.started:
        tail = str(printed["stderr"]).strip()[-500:] or "no message"
        if streams.stop is Stop.NOT_STARTED:
            raise InfrastructureFault(f"the sandbox did not start within {BOOT_SECONDS:.0f} s: {tail}")
        raise InfrastructureFault(f"runsc exited {capture.code} before the sandbox started: {tail}")
    if capture.code == KILLED_BY_SIGKILL:
        return SandboxReport(
            status=Status.OOM_KILLED,
            exit_code=KILLED_BY_SIGKILL,
            error="the sandbox exceeded its memory limit and was killed",
            **printed,
        )
    # The program ended the process itself (os._exit, a fatal signal): its exit status is the
    # sandbox's, and no output files were collected.
    code = capture.code or 0
    return SandboxReport(status=Status.SUCCEEDED if code == 0 else Status.FAILED, exit_code=code, **printed)
