"""Local sandboxes run the sandbox environment: its interpreter and libraries (never the host's),
matplotlib's prebuilt configuration, thread pools sized to the CPU limit, and a /dev/shm; and the
realistic data task through ``sandq run`` finishes within the default limits."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.sandbox.environment import MOUNT_POINT, default_lock, pinned
from tests.conftest import REPO, settings_env
from tests.integration.local import data_task

pytestmark = pytest.mark.usefixtures("worker")
WAIT = 300
PROBE = """\
import json, multiprocessing, os, sys
import numpy, matplotlib.pyplot as plt
plt.plot([1, 4, 9])
plt.savefig("/tmp/outputs/squares.png")
multiprocessing.Lock()  # a POSIX semaphore: needs /dev/shm
config = os.environ["MPLCONFIGDIR"]
print(json.dumps({
    "executable": sys.executable,
    "host_packages": [p for p in sys.path if "-packages" in p and not p.startswith(sys.prefix)],
    "numpy": numpy.__version__, "numpy_file": numpy.__file__,
    "matplotlib": plt.matplotlib.__version__, "backend": plt.get_backend(),
    "mplconfig": {n: os.path.islink(os.path.join(config, n)) for n in os.listdir(config)},
    "tmp": sorted(os.listdir("/tmp")),
    "threads": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")},
    "path": os.environ["PATH"],
}))
"""


def test_the_code_runs_the_environment_not_the_hosts_libraries(client: Client) -> None:
    result = client.run(ExecutionRequest(code=PROBE, cpu_limit="1500m", timeout_seconds=240), timeout=WAIT)
    assert result.status is Status.SUCCEEDED, result.stderr
    assert result.stderr == ""  # no warning: the font cache is not rebuilt, joblib-style locks work
    seen = json.loads(result.stdout)
    versions = dict(pin.split("==") for pin in pinned(default_lock()))
    assert seen["executable"] == f"{MOUNT_POINT}/bin/python3" and seen["host_packages"] == []
    assert (seen["numpy"], seen["matplotlib"]) == (versions["numpy"], versions["matplotlib"])
    assert seen["numpy_file"].startswith(f"{MOUNT_POINT}/lib/python3.11/site-packages/numpy/")
    assert seen["backend"].lower() == "agg"
    assert set(seen["mplconfig"]) >= {"matplotlibrc", "fontlist-v3.11.0.json"}
    assert all(seen["mplconfig"].values())  # links to the environment's files
    assert not [name for name in seen["tmp"] if name.startswith("matplotlib-")]  # no throwaway config dir
    assert seen["threads"] == {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert seen["path"].startswith(f"{MOUNT_POINT}/bin:")
    assert [f.name for f in result.output_files] == ["squares.png"]


@pytest.mark.timeout(600)
def test_the_code_sees_its_virtualenv_as_site_would_set_it_up(client: Client) -> None:
    """The runner starts without ``site`` (``-S``) and sets the environment up itself."""
    code = (
        "import sys, numpy\n"
        "print(sys.prefix, sys.exec_prefix, sys.path[-1], callable(help), callable(quit))\n"
        "exit(3)\n"
    )
    result = client.run(ExecutionRequest(code=code), timeout=WAIT)
    site_packages = f"{MOUNT_POINT}/lib/python3.11/site-packages"
    assert result.stdout.split() == [MOUNT_POINT, MOUNT_POINT, site_packages, "True", "True"], result.stderr
    assert (result.status, result.exit_code) == (Status.FAILED, 3)  # exit() as Python's own


def test_the_data_task_through_sandq_run_in_the_default_limits(settings: Settings, tmp_path: Path) -> None:
    csv = data_task.write_csv(tmp_path / data_task.CSV_NAME)
    program = tmp_path / "task.py"
    program.write_text(data_task.CODE)
    proc = subprocess.run(
        [sys.executable, "-m", "sandq", "run", str(program), "--input", str(csv), "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=540,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded", result["stderr"][-2000:]
    assert result["stderr"] == ""
    lines = result["stdout"].splitlines()
    assert lines[0].split() == ["total", "orders"] and lines[1].split() == ["region"]
    printed = {row.split()[0]: (float(row.split()[1]), int(row.split()[2])) for row in lines[2:-1]}
    assert printed == data_task.expected_summary(csv)
    assert sum(orders for _, orders in printed.values()) == data_task.ROWS
    assert lines[-1].startswith(f"slope {data_task.SLOPE:.2f} r2 ")
    (plot,) = result["output_files"]
    assert plot["name"] == data_task.PLOT_NAME and plot["mime_type"] == "image/png"
    assert base64.b64decode(plot["content"]).startswith(b"\x89PNG\r\n\x1a\n")
