"""Local sandboxes get the runner compiled, by their own interpreter, so they never compile it."""

from __future__ import annotations

import json
import marshal
import subprocess
from pathlib import Path

from sandq.sandbox.gvisor.bundle import RUNNER_BYTECODE_FILE, Shape, runner_dir, write_bundle
from sandq.sandbox.protocol import MOUNT_DIR, RUNNER_FILE, runner_source
from sandq.sandbox.runner import FRAME_END
from tests.conftest import make_settings

PRINT_MAGIC = "import importlib.util, sys; sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER)"


def test_bundle_ships_the_runner_compiled_for_the_sandbox_python(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path)
    bundle = tmp_path / "bundle"
    write_bundle(bundle, Shape("1", "256Mi"), settings, "sq-test")
    config = json.loads((bundle / "config.json").read_text())
    (mount,) = [m for m in config["mounts"] if m["destination"] == MOUNT_DIR]
    assert "ro" in mount["options"]
    shared = Path(mount["source"])
    assert shared == runner_dir(settings)
    assert sorted(p.name for p in shared.iterdir()) == [RUNNER_FILE, RUNNER_BYTECODE_FILE]
    runner = f"{MOUNT_DIR}/{RUNNER_BYTECODE_FILE}"
    assert config["process"]["args"] == [settings.sandbox_python, "-I", runner, "-"]
    pyc = (shared / RUNNER_BYTECODE_FILE).read_bytes()
    magic = subprocess.run(
        [settings.sandbox_python, "-I", "-c", PRINT_MAGIC], capture_output=True, check=True
    ).stdout
    assert pyc[:4] == magic
    code = marshal.loads(pyc[16:])  # only inspected here: the runner runs nowhere but in a sandbox
    assert code.co_filename == f"{MOUNT_DIR}/{RUNNER_FILE}"
    assert FRAME_END in code.co_consts
    assert compile(runner_source(), code.co_filename, "exec", dont_inherit=True).co_names == code.co_names


def test_bundles_share_one_runner_directory_written_once(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path)
    for name in ("sq-a", "sq-b"):
        write_bundle(tmp_path / name, Shape("1", "256Mi"), settings, name)
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("sq-a", "sq-b")]
    sources = {config["mounts"][-1]["source"] for config in configs}
    assert sources == {str(runner_dir(settings))}
    assert sorted(p.name for p in (tmp_path / "sq-a").iterdir()) == ["config.json", "rootfs"]
    assert [p.name for p in settings.bundle_dir.iterdir()] == [runner_dir(settings).name]  # no staging left


def test_a_warm_bundle_boots_at_the_lowest_weight_without_quota_and_keeps_every_other_limit(
    tmp_path: Path,
) -> None:
    settings = make_settings("redis://unused", tmp_path)
    shape = Shape("500m", "512Mi")
    write_bundle(tmp_path / "cold", shape, settings, "sq-cold")
    write_bundle(tmp_path / "warm", shape, settings, "sq-warm", warm=True)
    cold = json.loads((tmp_path / "cold" / "config.json").read_text())
    warm = json.loads((tmp_path / "warm" / "config.json").read_text())
    assert cold["linux"]["resources"]["cpu"] == {"quota": shape.cpu_quota_us(), "period": 100_000}
    assert shape.cpu_quota_us() == 50_000
    assert warm["linux"]["resources"]["cpu"] == {"shares": 2}  # no quota: runsc never writes cpu.cfs_*
    assert warm["linux"]["resources"]["memory"] == cold["linux"]["resources"]["memory"]
    assert warm["linux"]["cgroupsPath"] == "/sandq/sq-warm"
    for key in ("process", "mounts", "root"):
        assert warm[key] == cold[key]
