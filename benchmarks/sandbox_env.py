"""The sandbox environment's costs (issue 14), measured in one run; prints one JSON document.

- ``boot``: a sandbox running ``print(1)``, before (the host's ``/usr/bin/python3`` with its
  dist-packages and their start-up hooks, no environment: the bundle before issue 14) and after
  (the environment's interpreter, as sandq runs it), interleaved.
- ``imports``: ``import pandas`` and ``import sklearn`` inside a sandbox of the default shape.
- ``matplotlib``: pyplot, a plot and ``savefig`` with the environment's prebuilt files linked into
  a writable ``MPLCONFIGDIR`` (what the runner does) against ``MPLCONFIGDIR`` pointed straight at
  the read-only prebuilt directory (matplotlib then makes a throwaway one and rebuilds its font cache).
- ``size``: the environment on disk.
- ``task``: the realistic data task (tests/integration/local/data_task.py) through ``sandq run``,
  on a real worker without warm pool, at the default limits (500m, 512Mi).

Sandbox CPU is the sandbox cgroup's ``cpuacct.usage`` (sentry, gofer and the code: all gVisor
runs), peak memory its ``memory.max_usage_in_bytes``. The direct runs (``-I -c CODE``, attached,
one at a time) sit under a parent cgroup of their own, which keeps the CPU of removed children;
the task's sandbox cgroup is polled every 10 ms. Root and cgroup v1. The machine is shared:
the load average is reported, and only ratios of interleaved runs compare well.
Usage: python benchmarks/sandbox_env.py [--boots 10] [--imports 3] [--tasks 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandq import Client, Settings
from sandq.sandbox.environment import MATPLOTLIB_DIR, MOUNT_POINT
from sandq.sandbox.gvisor.bundle import SANDBOX_PYTHON, Shape, oci_config, runner_dir, sandbox_env
from tests.conftest import REPO, RedisServer, WorkerProcess, make_settings, settings_env
from tests.integration.local import data_task

CGROUPS = Path("/sys/fs/cgroup")
PARENT = f"sandq-bench-env-{os.getpid()}"
DEFAULT = Shape("500m", "512Mi")
BEFORE_PATH = "PATH=/usr/local/bin:/usr/bin:/bin"
BEFORE_ETC = ("/etc/matplotlibrc", "/etc/fonts")
TIMED_IMPORT = (
    "import time\nstart = time.perf_counter()\nimport {module}\n"
    "print(round(time.perf_counter() - start, 3))\n"
)
PLOT = (
    "import time\nstart = time.perf_counter()\nimport matplotlib.pyplot as plt\n"
    "plt.plot([1, 4, 9]); plt.savefig('/tmp/p.png')\nprint(round(time.perf_counter() - start, 3))\n"
)
LINK_PREBUILT = (  # what the runner does before the code
    f"import os\nos.mkdir('/tmp/.matplotlib')\nfor n in os.listdir('{MOUNT_POINT}/{MATPLOTLIB_DIR}'):\n"
    f"    os.symlink('{MOUNT_POINT}/{MATPLOTLIB_DIR}/' + n, '/tmp/.matplotlib/' + n)\n"
)


class Poller:
    """The last CPU and the highest memory of the cgroups ``paths()`` names, every 10 ms, until stopped."""

    def __init__(self, paths: Callable[[], list[str]]) -> None:
        self.paths = paths
        self.cpu: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for path in self.paths():
                with contextlib.suppress(OSError, ValueError):
                    self.cpu[path] = int((CGROUPS / "cpuacct" / path / "cpuacct.usage").read_text())
                with contextlib.suppress(OSError, ValueError):
                    peak = int((CGROUPS / "memory" / path / "memory.max_usage_in_bytes").read_text())
                    self.peak[path] = max(peak, self.peak.get(path, 0))
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def direct_run(settings: Settings, variant: str, code: str, env: list[str] | None = None) -> dict[str, Any]:
    """One attached ``runsc run`` of ``python -I -c code``: wall, sandbox CPU, peak memory, stdout."""
    name = f"bench-env-{uuid.uuid4().hex[:10]}"
    bundle = settings.bundle_dir / name
    (bundle / "rootfs").mkdir(parents=True)
    config = oci_config(DEFAULT, settings, runner_dir(settings), name, sandbox_env(settings))
    config["linux"]["cgroupsPath"] = f"/{PARENT}/{name}"
    process = config["process"]
    if variant == "before":
        process["args"] = [settings.sandbox_python, "-I", "-c", code]
        process["env"] = [BEFORE_PATH, *process["env"][1:]]
        mounts = [m for m in config["mounts"] if m["destination"] != MOUNT_POINT]
        binds = [{**mounts[-1], "destination": p, "source": p} for p in BEFORE_ETC if Path(p).exists()]
        config["mounts"] = mounts[:-1] + binds + mounts[-1:]
    else:
        process["args"] = [SANDBOX_PYTHON, "-I", "-c", code]
    process["env"] = process["env"] + (env or [])
    (bundle / "config.json").write_text(json.dumps(config))
    cpu_before = int((CGROUPS / "cpuacct" / PARENT / "cpuacct.usage").read_text())
    poller = Poller(lambda: [f"{PARENT}/{name}"])
    start = time.perf_counter()
    done = subprocess.run(
        ["runsc", "--root", str(settings.runsc_root), "--network=none", "run", "--bundle", str(bundle), name],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    poller.stop()
    cpu = int((CGROUPS / "cpuacct" / PARENT / "cpuacct.usage").read_text()) - cpu_before
    shutil.rmtree(bundle)
    if done.returncode != 0:
        raise RuntimeError(f"{variant}: exit {done.returncode}: {done.stderr[-1500:]}")
    peak = max(poller.peak.values(), default=0)
    return {"wall": wall, "cpu": cpu / 1e9, "peak": peak, "stdout": done.stdout}


def p50(runs: list[dict[str, Any]], key: str, scale: float = 1.0, digits: int = 3) -> float:
    return round(statistics.median(r[key] for r in runs) * scale, digits)


def summary(runs: list[dict[str, Any]], inner: bool = False) -> dict[str, Any]:
    out = {
        "n": len(runs),
        "wall_p50_s": p50(runs, "wall"),
        "sandbox_cpu_p50_s": p50(runs, "cpu"),
        "peak_mem_p50_mib": p50(runs, "peak", 1 / 2**20, 1),
    }
    if inner:
        out["in_sandbox_wall_p50_s"] = round(statistics.median(float(r["stdout"]) for r in runs), 3)
    return out


def interleaved(
    settings: Settings, variants: dict[str, tuple[str, str, list[str]]], n: int, timed: bool = True
) -> dict[str, Any]:
    """Each variant (its sandbox variant, code and extra environment) ``n`` times, shuffled per round;
    ``timed``: the code prints the seconds its work took inside the sandbox."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    for _ in range(n):
        for label in random.sample(list(variants), len(variants)):
            variant, code, env = variants[label]
            runs[label].append(direct_run(settings, variant, code, env))
    return {label: summary(rs, inner=timed) for label, rs in runs.items()}


def boot(settings: Settings, n: int) -> dict[str, Any]:
    variants = {"before": ("before", "print(1)", []), "after": ("after", "print(1)", [])}
    result = interleaved(settings, variants, n, timed=False)
    result["cpu_ratio_after_before"] = round(
        result["after"]["sandbox_cpu_p50_s"] / result["before"]["sandbox_cpu_p50_s"], 2
    )
    return result


def imports(settings: Settings, n: int) -> dict[str, Any]:
    variants = {m: ("after", TIMED_IMPORT.format(module=m), []) for m in ("pandas", "sklearn")}
    return interleaved(settings, variants, n)


def matplotlib(settings: Settings, n: int) -> dict[str, Any]:
    linked = ["MPLBACKEND=Agg", "MPLCONFIGDIR=/tmp/.matplotlib"]
    read_only = ["MPLBACKEND=Agg", f"MPLCONFIGDIR={MOUNT_POINT}/{MATPLOTLIB_DIR}"]
    variants = {
        "linked_into_writable_dir": ("after", LINK_PREBUILT + PLOT, linked),
        "read_only_dir": ("after", PLOT, read_only),
    }
    return interleaved(settings, variants, n)


def size(env: Path) -> dict[str, Any]:
    stats = [p.lstat() for p in env.rglob("*")]
    return {
        "hash": env.name,
        "disk_mib": round(sum(s.st_blocks * 512 for s in stats) / 2**20),
        "apparent_mib": round(sum(s.st_size for s in stats) / 2**20),
        "bytecode_mib": round(sum(p.lstat().st_size for p in env.rglob("*.pyc")) / 2**20),
    }


def task(base: Path, n: int) -> dict[str, Any]:
    """The data task through ``sandq run`` ``n`` times, on a worker of its own (no warm pool)."""
    (base / "redis").mkdir()
    redis_server = RedisServer(base / "redis")
    settings = make_settings(redis_server.url, base / "task", warm_pool_max=0)
    client = Client(settings)
    worker = WorkerProcess(settings, base / "worker.log")
    csv = data_task.write_csv(base / data_task.CSV_NAME)
    program = base / "task.py"
    program.write_text(data_task.CODE)
    runs = []
    try:
        worker.wait_ready(client, timeout=300)
        for _ in range(n):
            poller = Poller(lambda: sandbox_cgroups(settings))
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "sandq", "run", str(program), "--input", str(csv), "--json"],
                env=settings_env(settings),
                capture_output=True,
                text=True,
                cwd=REPO,
                check=False,
            )
            wall = time.perf_counter() - start
            poller.stop()
            result = json.loads(done.stdout)
            (sandbox,) = poller.cpu  # no warm pool: one sandbox per run
            runs.append({
                "status": result["status"],
                "wall": wall,
                "run_seconds": result["run_seconds"],
                "cpu": poller.cpu[sandbox] / 1e9,
                "peak": poller.peak.get(sandbox, 0),
            })
    finally:
        worker.stop()
        client.close()
        redis_server.stop()
    return {
        **summary(runs),
        "statuses": [r["status"] for r in runs],
        "run_seconds_p50": p50(runs, "run_seconds", digits=2),
        "peak_mem_mib": [round(r["peak"] / 2**20, 1) for r in runs],
        "limits": {"cpu": DEFAULT.cpu_limit, "memory": DEFAULT.mem_limit},
        "csv": {"rows": data_task.ROWS, "gzip_bytes": csv.stat().st_size},
    }


def sandbox_cgroups(settings: Settings) -> list[str]:
    """The cgroups of the sandboxes whose bundles are in ``settings.bundle_dir`` now."""
    paths = []
    for config in settings.bundle_dir.glob("sq-*/config.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            paths.append(json.loads(config.read_text())["linux"]["cgroupsPath"].strip("/"))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--imports", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sandq-bench-env-"))
    settings = make_settings("redis://unused", base / "direct")
    settings.runsc_root.mkdir(parents=True)
    report: dict[str, Any] = {"load_before": [round(x, 1) for x in os.getloadavg()], "cpus": os.cpu_count()}
    for controller in ("cpuacct", "memory"):
        (CGROUPS / controller / PARENT).mkdir(exist_ok=True)
    try:
        direct_run(settings, "after", "pass")  # warms the page cache
        report["boot"] = boot(settings, args.boots)
        report["imports"] = imports(settings, args.imports)
        report["matplotlib"] = matplotlib(settings, args.imports)
        report["size"] = size(sandbox_env(settings))
        report["task"] = task(base, args.tasks)
    finally:
        report["load_after"] = [round(x, 1) for x in os.getloadavg()]
        shutil.rmtree(base, ignore_errors=True)
        for controller in CGROUPS.iterdir():  # runsc made the parent in each controller
            with contextlib.suppress(OSError):
                (controller / PARENT).rmdir()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
