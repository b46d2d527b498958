"""One local gVisor sandbox: started (perhaps ahead of time), handed one job, removed."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandq.sandbox.backend import InfrastructureFault, OnOutput
from sandq.sandbox.gvisor import cgroup
from sandq.sandbox.gvisor.bundle import CPU_PERIOD_US, Shape, write_bundle
from sandq.sandbox.gvisor.streams import Streams, read_streams
from sandq.sandbox.metrics import record_boot
from sandq.sandbox.protocol import READY
from sandq.settings import Settings

log = logging.getLogger(__name__)

SANDBOX_PREFIX = "sq-"
OWNER_FILE = "owner.pid"
OWNERLESS_GRACE_SECONDS = 60.0
"""A bundle this young without its owner file is being written, not left behind."""


class Capture:
    """What came out of a sandbox, and its exit code (None: still tearing down after its report)."""

    def __init__(self, streams: Streams, code: int | None) -> None:
        self.streams, self.code = streams, code


class LocalSandbox:
    """A ``runsc run`` whose runner waits on stdin for exactly one job."""

    def __init__(
        self,
        settings: Settings,
        shape: Shape,
        *,
        shares: int = cgroup.BATCH_SHARES,
        quota_when_ready: bool = False,
        slot: Callable[[], None] = lambda: None,
    ) -> None:
        """Start the sandbox at the CPU weight ``shares``. ``quota_when_ready``: it boots without its
        shape's CPU quota, which is set on its cgroup once the runner is ready, before the job is
        written (cgroups v1 only: ``cgroup.supported``). ``slot`` releases its boot slot
        (``booting``): called once, when its runner is ready or it is removed. The boot's seconds
        are observed once its runner is ready (``sandq_sandbox_boot_seconds``)."""
        self.settings = settings
        self.shape = shape
        self.name = SANDBOX_PREFIX + uuid.uuid4().hex[:16]
        self.bundle = settings.bundle_dir / self.name
        self._slot = slot
        self._ready = False
        self.started = time.monotonic()
        """When it was started (monotonic seconds)."""
        self.boot_seconds: float | None = None
        """How long it took for its runner to be ready; None until then."""
        self._quota_pending = quota_when_ready
        try:
            write_bundle(self.bundle, shape, settings, self.name, shares=shares, quota=not quota_when_ready)
            (self.bundle / OWNER_FILE).write_text(str(os.getpid()))
            self.proc = _spawner.start(
                [*runsc_base(settings), "--network=none", "run", "--bundle", str(self.bundle), self.name]
            )
        except BaseException:
            slot()
            shutil.rmtree(self.bundle, ignore_errors=True)
            raise

    def ready_to_read(self, timeout: float) -> bool:
        """True once the runner's stderr has something to read (its readiness byte, or an error)."""
        assert self.proc.stderr is not None
        readable, _, _ = select.select([self.proc.stderr], [], [], timeout)
        return bool(readable)

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the runner's readiness byte; False if the sandbox died or was too slow."""
        assert self.proc.stderr is not None
        if self.ready_to_read(timeout) and os.read(self.proc.stderr.fileno(), 1) == READY:
            self._ready = True
            self._booted()
        return self._ready

    def _booted(self) -> None:
        """The runner is ready: give the boot slot back, and observe the boot (once)."""
        self._slot()
        if self.boot_seconds is None:
            self.boot_seconds = time.monotonic() - self.started
            record_boot(self.boot_seconds)

    def alive(self) -> bool:
        """True while the sandbox has not exited."""
        return self.proc.poll() is None

    def execute(
        self,
        job: bytes,
        marker: str,
        caps: tuple[int, int],
        timeout: float,
        on_output: OnOutput | None = None,
    ) -> Capture:
        """Hand the job over and read what comes out, killing the sandbox at the deadline or a cap.

        The job is written once the runner is ready, after the sandbox's CPU quota is set if it
        booted without (``InfrastructureFault`` if that fails: then the job is never written).
        ``caps`` are the program's per-stream cap and the report's. Returns as soon as the report
        is complete; the sandbox may still be tearing down (``remove`` waits for it). Without a
        report, waits for the exit code, which tells what happened. ``on_output(stream, data)``
        sees the program's output as it is read.
        """
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None

        def hand_over() -> None:  # the runner is ready: limit the sandbox, then write its job
            self._booted()
            self._set_quota()
            threading.Thread(target=_write_and_close, args=(self.proc.stdin, job), daemon=True).start()

        if self._ready:
            hand_over()
        streams = read_streams(
            self.proc.stdout.fileno(),
            self.proc.stderr.fileno(),
            marker=marker.encode(),
            cap=caps[0],
            report_cap=caps[1],
            timeout=timeout,
            started=self._ready,
            exited=lambda: self.proc.poll() is not None,
            on_output=on_output,
            on_started=hand_over,
        )
        if streams.stop is not None:
            self.kill()
        return Capture(streams, self.proc.poll() if streams.report is not None else self.proc.wait())

    def _set_quota(self) -> None:
        """Give a sandbox that booted without its CPU quota that quota (no code has run in it yet)."""
        if not self._quota_pending:
            return
        try:
            cgroup.set_quota(self.name, self.shape.cpu_quota_us(), CPU_PERIOD_US)
        except OSError as error:
            raise InfrastructureFault(f"could not set the CPU quota of {self.name}: {error}") from error
        self._quota_pending = False

    def kill(self) -> bool:
        """Kill every process in the sandbox; False if runsc knows no such sandbox (not yet, or no more)."""
        return runsc(self.settings, "kill", "--all", self.name, "KILL").returncode == 0

    def remove(self) -> None:
        """Stop the sandbox if it still runs, and remove every trace of it."""
        self._slot()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # an idle runner exits at EOF
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        if has_state(self.settings, self.name):
            remove_sandbox(self.settings, self.name)
        else:  # an attached ``runsc run`` that ended has already deleted its container
            shutil.rmtree(self.bundle, ignore_errors=True)


class _Spawner:
    """Starts every ``runsc run`` of this process from one thread that lives as long as the process.

    Each is started under ``setpriv --pdeathsig KILL``, so it is killed when this process dies,
    even by SIGKILL, and an attached ``runsc run`` takes its sandbox and gofer down with it (the
    state left behind is swept by the next worker). The parent-death signal fires when the
    *thread* that started the process ends, hence the one long-lived thread (one per process:
    a forked child makes its own).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: tuple[int, ThreadPoolExecutor] | None = None
        self._prefix = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        if not self._prefix:
            log.warning("setpriv (util-linux) not found: sandboxes may outlive a killed worker until swept")

    def start(self, args: list[str]) -> subprocess.Popen[bytes]:
        """``args`` started with its three standard streams piped, in a session of its own."""
        with self._lock:
            if self._thread is None or self._thread[0] != os.getpid():
                self._thread = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="sandq-spawn"))
            thread = self._thread[1]
        return thread.submit(self._popen, [*self._prefix, *args]).result()

    @staticmethod
    def _popen(args: list[str]) -> subprocess.Popen[bytes]:
        pipe = subprocess.PIPE
        return subprocess.Popen(args, stdin=pipe, stdout=pipe, stderr=pipe, start_new_session=True)


_spawner = _Spawner()


def _write_and_close(stdin: object, job: bytes) -> None:
    assert hasattr(stdin, "write") and hasattr(stdin, "close")
    with contextlib.suppress(OSError):  # the sandbox died first: its exit code tells why
        stdin.write(job)
    with contextlib.suppress(OSError):
        stdin.close()


def runsc_base(settings: Settings) -> list[str]:
    """``runsc`` with sandq's own state directory."""
    return [settings.runsc_path, "--root", str(settings.runsc_root)]


def runsc(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run one runsc command and return what it did."""
    return subprocess.run([*runsc_base(settings), *args], capture_output=True, timeout=60, check=False)


def has_state(settings: Settings, name: str) -> bool:
    """True while runsc keeps state for the sandbox ``name``."""
    prefix = f"{name}_sandbox"  # runsc's '<sandbox>_sandbox:<container>.state'; a glob would compile a regex
    try:
        with os.scandir(settings.runsc_root) as entries:
            return any(e.name.startswith(prefix) and e.name.endswith(".state") for e in entries)
    except FileNotFoundError:
        return False


def remove_sandbox(settings: Settings, name: str) -> None:
    """Kill, delete and forget a sandbox by name, whatever state it is in.

    Its bundle (with its owner file) goes only once runsc has forgotten it, so that a sweep that
    could not delete it finds it again.
    """
    runsc(settings, "kill", "--all", name, "KILL")
    runsc(settings, "delete", "--force", name)
    if has_state(settings, name):
        log.warning("runsc could not delete sandbox %s yet; a later sweep tries again", name)
        return
    shutil.rmtree(settings.bundle_dir / name, ignore_errors=True)


def sweep_orphans(settings: Settings) -> list[str]:
    """Remove sandboxes whose owning worker process is gone; return their names."""
    listed = runsc(settings, "list", "--quiet").stdout.decode().split()
    names = set(listed) | {p.name for p in settings.bundle_dir.iterdir()}
    removed = []
    for name in sorted(n for n in names if n.startswith(SANDBOX_PREFIX)):
        if not _owner_alive(settings.bundle_dir / name / OWNER_FILE):
            remove_sandbox(settings, name)
            removed.append(name)
    return removed


def _owner_alive(owner_file: Path) -> bool:
    """True if the process that started the sandbox still runs (a zombie counts as gone).

    A young bundle without a readable owner file is still being written by its owner.
    """
    try:
        pid = int(owner_file.read_text())
    except (FileNotFoundError, ValueError):
        return _younger_than(owner_file.parent, OWNERLESS_GRACE_SECONDS)
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def _younger_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False
