"""The local gVisor backend: one ``runsc run`` sandbox per execution, no cluster."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from sandq.contract import ExecutionRequest, Status
from sandq.sandbox_runner import capture_streams
from sandq.settings import Settings
from sandq.worker.backend import Backend, InfrastructureFault, SandboxReport, now, parse_frame
from sandq.worker.oci_bundle import write_bundle

log = logging.getLogger(__name__)

SANDBOX_PREFIX = "sq-"
OWNER_FILE = "owner.pid"
RUNSC_STDERR_CAP = 64 * 1024
KILLED_BY_SIGKILL = 137


def sandbox_name(execution_id: str) -> str:
    """Deterministic sandbox id: a redelivered execution replaces its own leftovers."""
    return SANDBOX_PREFIX + execution_id


class GVisorBackend(Backend):
    """Runs each request in a fresh ``runsc run`` sandbox with an OCI bundle."""

    name = "gvisor"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: dict[str, str] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        settings.runsc_root.mkdir(parents=True, exist_ok=True)
        settings.bundle_dir.mkdir(parents=True, exist_ok=True)

    def _runsc(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        cmd = [self.settings.runsc_path, "--root", str(self.settings.runsc_root), *args]
        return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)

    def _kill(self, name: str) -> None:
        self._runsc("kill", "--all", name, "KILL")

    def _remove(self, name: str) -> None:
        self._runsc("kill", "--all", name, "KILL")
        self._runsc("delete", "--force", name)
        shutil.rmtree(self.settings.bundle_dir / name, ignore_errors=True)

    def _frame_cap(self, request: ExecutionRequest) -> int:
        payload = 2 * request.max_output_bytes + self.settings.max_output_files_bytes
        return payload * 4 // 3 + 64 * 1024

    def run(self, execution_id: str, request: ExecutionRequest) -> SandboxReport:
        """Run ``request`` in a new sandbox and remove every trace of it afterwards."""
        name = sandbox_name(execution_id)
        bundle = self.settings.bundle_dir / name
        self._remove(name)
        try:
            write_bundle(bundle, request, self.settings, name)
            (bundle / OWNER_FILE).write_text(str(os.getpid()))
            with self._lock:
                self._running[execution_id] = name
            return self._run_bundle(execution_id, name, bundle, request)
        except OSError as error:
            raise InfrastructureFault(f"could not start the sandbox: {error}") from error
        finally:
            with self._lock:
                self._running.pop(execution_id, None)
                self._cancelled.discard(execution_id)
            self._remove(name)

    def _run_bundle(
        self, execution_id: str, name: str, bundle: Path, request: ExecutionRequest
    ) -> SandboxReport:
        started = now()
        # The runner enforces the deadline inside; this backstop also covers boot and teardown.
        deadline = time.monotonic() + request.timeout_seconds + self.settings.kill_grace_seconds
        cmd = [
            self.settings.runsc_path,
            "--root",
            str(self.settings.runsc_root),
            "--network=none",
            "run",
            "--bundle",
            str(bundle),
            name,
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        with proc, proc.stdout, proc.stderr:
            out, err, _, _, stop = capture_streams(
                proc.stdout.fileno(),
                proc.stderr.fileno(),
                (self._frame_cap(request), RUNSC_STDERR_CAP),
                deadline,
                lambda: proc.poll() is not None,
            )
            if stop is not None:
                self._kill(name)
            code = proc.wait()
        report = parse_frame(out)
        finished = now()
        with self._lock:
            cancelled = execution_id in self._cancelled
        if cancelled:
            report = SandboxReport(status=Status.CANCELLED, error="cancelled while running")
        elif report is None:
            report = self._classify_without_frame(code, stop, err)
        return report.model_copy(
            update={"sandbox_name": name, "started_at": started, "finished_at": finished}
        )

    @staticmethod
    def _classify_without_frame(code: int, stop: str | None, err: bytes) -> SandboxReport:
        if stop == "timed_out":
            return SandboxReport(status=Status.TIMED_OUT, exit_code=124)
        if stop == "output_limit_exceeded":
            return SandboxReport(status=Status.OUTPUT_LIMIT_EXCEEDED, stdout_truncated=True)
        if code == KILLED_BY_SIGKILL:
            return SandboxReport(
                status=Status.OOM_KILLED,
                exit_code=KILLED_BY_SIGKILL,
                error="the sandbox exceeded its memory limit and was killed",
            )
        tail = err.decode("utf-8", errors="replace").strip()[-500:]
        raise InfrastructureFault(f"runsc exited {code} without a result: {tail or 'no message'}")

    def cancel(self, execution_id: str) -> bool:
        """Kill the sandbox of a running execution; it ends as ``cancelled``."""
        with self._lock:
            name = self._running.get(execution_id)
            if name is None:
                return False
            self._cancelled.add(execution_id)
        self._kill(name)
        return True

    def sweep(self) -> None:
        """Remove sandboxes whose owning worker process is gone."""
        listed = self._runsc("list", "--quiet").stdout.decode().split()
        names = set(listed) | {p.name for p in self.settings.bundle_dir.iterdir()}
        for name in sorted(n for n in names if n.startswith(SANDBOX_PREFIX)):
            if not _owner_alive(self.settings.bundle_dir / name / OWNER_FILE):
                log.info("removing leftover sandbox %s", name)
                self._remove(name)


def _owner_alive(owner_file: Path) -> bool:
    try:
        pid = int(owner_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True
