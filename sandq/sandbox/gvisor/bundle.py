"""OCI runtime bundles for the local gVisor backend, as pure functions."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from sandq.contract import ExecutionRequest
from sandq.sandbox import environment
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.environment import MOUNT_POINT
from sandq.sandbox.gvisor import cgroup
from sandq.sandbox.protocol import MOUNT_DIR, RUNNER_FILE, runner_command, runner_source
from sandq.settings import Settings

SANDBOX_UID = 65534
CPU_PERIOD_US = 100_000
# System files, read-only: the interpreter and its standard library. The libraries (and
# matplotlib's configuration) come from the sandbox environment, mounted at MOUNT_POINT.
# Those the host links into /usr (merged /usr: /bin -> usr/bin) are links in the sandbox's
# root too, not mounts: each mount costs a boot about 4 ms of CPU.
_HOST_READONLY = ("/usr", "/bin", "/lib", "/lib64", "/etc/alternatives")
_ENV = [
    f"PATH={MOUNT_POINT}/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME=/tmp",
    "PYTHONDONTWRITEBYTECODE=1",
    "LANG=C.UTF-8",
]
SANDBOX_PYTHON = f"{MOUNT_POINT}/bin/python3"
"""The sandboxes' interpreter: the environment's, a link to ``settings.sandbox_python`` (which compiles
the runner and validates the environment on the host)."""
SHM_BYTES = 64 * 2**20
"""Size of the sandbox's ``/dev/shm`` (as a container runtime gives a pod): joblib's and
multiprocessing's semaphores live there."""
RUNNER_BYTECODE_FILE = "runner.pyc"
RUNNER_DIR_PREFIX = "runner-"
_COMPILE_RUNNER = (
    "import importlib.util, marshal, sys\n"
    f"code = compile(sys.stdin.buffer.read(), '{MOUNT_DIR}/{RUNNER_FILE}', 'exec', dont_inherit=True)\n"
    "sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code))\n"
)


def _bind(path: str, source: str | None = None) -> dict[str, Any]:
    return {
        "destination": path,
        "type": "bind",
        "source": source or path,
        "options": ["rbind", "ro", "nosuid", "nodev"],
    }


@dataclass(frozen=True)
class Shape:
    """The limits fixed when a sandbox starts; sandboxes of one shape are interchangeable."""

    cpu_limit: str
    mem_limit: str

    @classmethod
    def of(cls, request: ExecutionRequest) -> Shape:
        """The shape a request needs."""
        return cls(request.cpu_limit, request.mem_limit)

    def cpu_quota_us(self) -> int:
        """The CPU quota of this shape, in microseconds per ``CPU_PERIOD_US``."""
        return int(parse_quantity(self.cpu_limit) * CPU_PERIOD_US)


def oci_config(
    shape: Shape,
    settings: Settings,
    files_dir: Path,
    sandbox_name: str,
    env_dir: Path,
    shares: int = cgroup.BATCH_SHARES,
    *,
    site: bool = False,
) -> dict[str, Any]:
    """The ``config.json`` of one sandbox: read-only, unprivileged, limited, offline.

    Its runner waits for the job on stdin, so a sandbox can start before its request is known.
    ``env_dir`` is the sandbox environment, mounted read-only at ``MOUNT_POINT``; the runner
    and the user's code run its interpreter; its root is ``make_root``'s. ``shares`` is its CPU
    weight (``cgroup``). ``site``: the environment has .pth files, which only ``site`` reads;
    without them the runner starts without ``site`` (``-S``) and sets the virtualenv up itself,
    which saves each boot about 10 ms of CPU and 20 ms.
    """
    mem = int(parse_quantity(shape.mem_limit))
    cpu_quota = shape.cpu_quota_us()
    tmp_bytes = settings.tmp_size_bytes
    rlimits = [
        ("RLIMIT_NPROC", settings.nproc_limit),
        ("RLIMIT_NOFILE", settings.nofile_limit),
        ("RLIMIT_FSIZE", tmp_bytes),
        ("RLIMIT_CORE", 0),
    ]
    host_ro = [p for p in _HOST_READONLY if Path(p).is_dir() and not Path(p).is_symlink()]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_UID},
            "args": runner_command(SANDBOX_PYTHON, "-", RUNNER_BYTECODE_FILE, site=site),
            "env": _ENV,
            "cwd": "/tmp",
            "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [{"type": t, "hard": v, "soft": v} for t, v in rlimits],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "noexec", f"size={SHM_BYTES}", "mode=1777"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", f"size={tmp_bytes}", "mode=1777"],
            },
            *(_bind(p) for p in host_ro),
            _bind(MOUNT_POINT, str(env_dir)),
            _bind(MOUNT_DIR, str(files_dir)),
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "cgroupsPath": f"/{cgroup.PARENT}/{sandbox_name}",
            "resources": {
                "memory": {"limit": mem, "swap": mem},
                "cpu": {"shares": shares, "quota": cpu_quota, "period": CPU_PERIOD_US},
            },
        },
    }


@functools.cache
def runner_bytecode(python: str) -> bytes:
    """The runner as a ``.pyc`` that ``python``, the sandboxes' interpreter, runs without compiling it.

    Compiling the runner's source cost each sandbox about 20 ms of CPU under gVisor; loading
    its bytecode costs well under 1 ms. ``python`` itself compiles it, on the host, once per
    process (nothing is run), so the magic number is always the sandboxes' own.
    """
    compiled = subprocess.run(
        [python, "-I", "-c", _COMPILE_RUNNER], input=runner_source(), capture_output=True, check=True
    )
    return compiled.stdout


def runner_dir(settings: Settings) -> Path:
    """The directory every local sandbox mounts read-only at ``/sandq``: the runner, source and compiled.

    Written once per runner version and interpreter (atomically: a directory renamed into
    place), then shared, so starting a sandbox writes only its ``config.json``. The sandbox
    runs the compiled runner; its source is there too, as in a Kubernetes sandbox.
    """
    python = settings.sandbox_python
    digest = hashlib.sha256(runner_source() + python.encode()).hexdigest()[:16]
    target = settings.bundle_dir / f"{RUNNER_DIR_PREFIX}{digest}"
    if target.is_dir():
        return target
    staging = settings.bundle_dir / f".{target.name}-{os.getpid()}-{threading.get_ident()}"
    staging.mkdir(parents=True)
    (staging / RUNNER_FILE).write_bytes(runner_source())
    (staging / RUNNER_BYTECODE_FILE).write_bytes(runner_bytecode(python))
    try:
        staging.rename(target)
    except OSError:  # written meanwhile by another worker process
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_bundle(
    bundle: Path,
    shape: Shape,
    settings: Settings,
    sandbox_name: str,
    *,
    shares: int = cgroup.BATCH_SHARES,
    quota: bool = True,
) -> None:
    """Write the bundle directory: ``config.json`` and a root with only the host's links into /usr
    (``host_links``); the runner comes from ``runner_dir``.

    ``shares``: the sandbox's CPU weight while it boots. ``quota=False``: it boots without its
    shape's CPU quota, which is set on its cgroup once its runner is ready, before its job is
    written (``cgroup``): the boot is runsc's own work, and a quota on it only slows it down.
    """
    env_dir = sandbox_env(settings)
    make_root(bundle / "rootfs")
    config = oci_config(
        shape, settings, runner_dir(settings), sandbox_name, env_dir, shares, site=has_path_files(env_dir)
    )
    if not quota:
        config = without_quota(config)
    (bundle / "config.json").write_text(json.dumps(config))


def make_root(rootfs: Path) -> None:
    """The root directory of a bundle (``oci_config``'s ``rootfs``): empty, but for the host's links
    into /usr (``host_links``), which ``oci_config`` does not mount."""
    rootfs.mkdir(parents=True, exist_ok=True)
    for path, target in host_links().items():
        link = rootfs / path.lstrip("/")
        if not link.is_symlink():
            link.symlink_to(target)


@functools.cache
def host_links() -> dict[str, str]:
    """The system paths the host links elsewhere (``/bin`` -> ``usr/bin``), and where to."""
    return {p: os.readlink(p) for p in _HOST_READONLY if Path(p).is_symlink()}


@functools.cache
def has_path_files(env_dir: Path) -> bool:
    """True if the environment's libraries include a .pth file (which only ``site`` reads)."""
    return any(env_dir.glob("lib/python*/site-packages/*.pth"))


def without_quota(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its CPU weight and no CPU quota (runsc then never writes ``cpu.cfs_*``)."""
    resources = config["linux"]["resources"]
    resources = {**resources, "cpu": {"shares": resources["cpu"]["shares"]}}
    return {**config, "linux": {**config["linux"], "resources": resources}}


def sandbox_env(settings: Settings) -> Path:
    """The sandbox environment the settings name, validated once per process (never built here:
    ``sandq worker`` builds it at start). Unusable, it is an infrastructure fault: a sandbox never
    falls back to the host's libraries."""
    try:
        return environment.ensure(settings, build_missing=False)
    except environment.SandboxEnvError as error:
        raise InfrastructureFault(f"the sandbox environment is unusable: {error}") from error
