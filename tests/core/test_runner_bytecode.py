"""Local sandboxes get the runner compiled, by their own interpreter, so they never compile it."""

from __future__ import annotations

import json
import marshal
import subprocess
from pathlib import Path

from sandq.sandbox_files import MOUNT_DIR, RUNNER_FILE, runner_source
from sandq.sandbox_runner import FRAME_END
from sandq.worker.oci_bundle import RUNNER_BYTECODE_FILE, Shape, write_bundle
from tests.conftest import make_settings

PRINT_MAGIC = "import importlib.util, sys; sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER)"


def test_bundle_ships_the_runner_compiled_for_the_sandbox_python(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path)
    bundle = tmp_path / "bundle"
    write_bundle(bundle, Shape("1", "256Mi"), settings, "sq-test")
    files = sorted(p.name for p in (bundle / "files").iterdir())
    assert files == [RUNNER_FILE, RUNNER_BYTECODE_FILE]
    args = json.loads((bundle / "config.json").read_text())["process"]["args"]
    assert args == [settings.sandbox_python, "-I", f"{MOUNT_DIR}/{RUNNER_BYTECODE_FILE}", "-"]
    pyc = (bundle / "files" / RUNNER_BYTECODE_FILE).read_bytes()
    magic = subprocess.run(
        [settings.sandbox_python, "-I", "-c", PRINT_MAGIC], capture_output=True, check=True
    ).stdout
    assert pyc[:4] == magic
    code = marshal.loads(pyc[16:])  # only inspected here: the runner runs nowhere but in a sandbox
    assert code.co_filename == f"{MOUNT_DIR}/{RUNNER_FILE}"
    assert FRAME_END in code.co_consts
    assert compile(runner_source(), code.co_filename, "exec", dont_inherit=True).co_names == code.co_names
