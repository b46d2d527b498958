"""Local sandboxes: the runner compiled by their own interpreter (so they never compile it), the
sandbox environment mounted, and the OCI config that confines them."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandq.sandbox import environment
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.environment import MOUNT_POINT
from sandq.sandbox.gvisor.bundle import (
    RUNNER_BYTECODE_FILE,
    SANDBOX_PYTHON,
    SHM_BYTES,
    Shape,
    has_path_files,
    oci_config,
    runner_dir,
    write_bundle,
)
from sandq.sandbox.gvisor.cgroup import BATCH_SHARES, BOOT_SHARES, INTERACTIVE_SHARES
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
    assert config["process"]["args"] == [SANDBOX_PYTHON, "-I", "-S", runner, "-"]  # the lock has no .pth file
    env_python = Path(environment.location(settings), "bin", "python3")
    assert env_python.resolve() == Path(settings.sandbox_python).resolve()  # its interpreter is the host's
    pyc = (shared / RUNNER_BYTECODE_FILE).read_bytes()
    magic = subprocess.run(
        [settings.sandbox_python, "-I", "-c", PRINT_MAGIC], capture_output=True, check=True
    ).stdout
    assert pyc[:4] == magic
    code = marshal.loads(pyc[16:])  # only inspected here: the runner runs nowhere but in a sandbox
    assert code.co_filename == f"{MOUNT_DIR}/{RUNNER_FILE}"
    assert FRAME_END in code.co_consts
    assert compile(runner_source(), code.co_filename, "exec", dont_inherit=True).co_names == code.co_names


def test_bundles_mount_the_validated_environment(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path)
    write_bundle(tmp_path / "sq-env", Shape("1", "256Mi"), settings, "sq-env")
    mounts = json.loads((tmp_path / "sq-env" / "config.json").read_text())["mounts"]
    (env,) = [m for m in mounts if m["destination"] == MOUNT_POINT]
    assert env["source"] == str(environment.location(settings))
    assert {"ro", "nosuid", "nodev"} <= set(env["options"])


def test_without_its_environment_no_sandbox_starts(tmp_path: Path) -> None:
    """A missing environment is an infrastructure fault: never a sandbox with the host's libraries."""
    settings = make_settings("redis://unused", tmp_path, sandbox_env_dir=tmp_path / "no-envs")
    with pytest.raises(InfrastructureFault, match="no sandbox environment"):
        write_bundle(tmp_path / "sq-none", Shape("1", "256Mi"), settings, "sq-none")
    assert not (tmp_path / "sq-none").exists()


def test_bundles_share_one_runner_directory_written_once(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path)
    for name in ("sq-a", "sq-b"):
        write_bundle(tmp_path / name, Shape("1", "256Mi"), settings, name)
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("sq-a", "sq-b")]
    sources = {config["mounts"][-1]["source"] for config in configs}
    assert sources == {str(runner_dir(settings))}
    assert sorted(p.name for p in (tmp_path / "sq-a").iterdir()) == ["config.json", "rootfs"]
    assert [p.name for p in settings.bundle_dir.iterdir()] == [runner_dir(settings).name]  # no staging left


# ---------------------------------------------------------------------------- the OCI config, pure


def _config(tmp_path: Path, shape: Shape = Shape("500m", "512Mi"), **overrides: object) -> dict[str, Any]:
    settings = make_settings("redis://unused", tmp_path, **overrides)
    return oci_config(shape, settings, tmp_path / "files", "sq-unit", tmp_path / "env")


def test_the_shape_sets_the_cgroup_limits(tmp_path: Path) -> None:
    resources = _config(tmp_path, Shape("1500m", "256Mi"))["linux"]["resources"]
    assert resources["memory"] == {"limit": 256 * 2**20, "swap": 256 * 2**20}  # no swap beyond the limit
    assert resources["cpu"] == {"shares": BATCH_SHARES, "quota": 150_000, "period": 100_000}


def test_system_paths_the_host_links_into_usr_are_links_in_the_root_not_mounts(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path)
    write_bundle(tmp_path / "bundle", Shape("500m", "512Mi"), settings, "sq-links")
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    mounted = {m["destination"] for m in config["mounts"] if m["type"] == "bind"}
    rootfs = tmp_path / "bundle" / "rootfs"
    for path in ("/usr", "/bin", "/lib", "/lib64"):
        host = Path(path)
        if host.is_symlink():
            assert path not in mounted
            assert os.readlink(rootfs / path.lstrip("/")) == os.readlink(host)  # bin -> usr/bin
        elif host.is_dir():
            assert path in mounted
    assert "/usr" in mounted


def test_the_runner_starts_without_site_unless_the_environment_has_pth_files(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path)
    shape = Shape("500m", "512Mi")
    env = tmp_path / "env"
    assert oci_config(shape, settings, tmp_path, "sq-unit", env)["process"]["args"][1:3] == ["-I", "-S"]
    assert "-S" not in oci_config(shape, settings, tmp_path, "sq-unit", env, site=True)["process"]["args"]
    site_packages = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / "numpy").mkdir()
    assert not has_path_files(tmp_path / "env")
    (tmp_path / "with-pth" / site_packages.relative_to(tmp_path / "env")).mkdir(parents=True)
    (tmp_path / "with-pth" / site_packages.relative_to(tmp_path / "env") / "extra.pth").write_text("/x\n")
    assert has_path_files(tmp_path / "with-pth")


def test_the_process_is_unprivileged_and_sees_no_host_environment(tmp_path: Path) -> None:
    process = _config(tmp_path)["process"]
    assert process["user"] == {"uid": 65534, "gid": 65534}
    assert all(caps == [] for caps in process["capabilities"].values())
    assert process["noNewPrivileges"] is True and process["terminal"] is False
    env = dict(entry.split("=", 1) for entry in process["env"])
    assert set(env) == {"PATH", "HOME", "PYTHONDONTWRITEBYTECODE", "LANG"}
    assert env["PATH"].split(":")[0] == f"{MOUNT_POINT}/bin"
    assert process["args"][-1] == "-"  # the job comes on stdin


def test_rlimits_follow_the_settings(tmp_path: Path) -> None:
    process = _config(tmp_path, nproc_limit=64, nofile_limit=128, tmp_size="32Mi")["process"]
    limits = {r["type"]: (r["soft"], r["hard"]) for r in process["rlimits"]}
    assert limits == {"RLIMIT_NPROC": (64, 64), "RLIMIT_NOFILE": (128, 128),
                      "RLIMIT_FSIZE": (32 * 2**20, 32 * 2**20), "RLIMIT_CORE": (0, 0)}


def test_the_filesystem_is_read_only_but_a_sized_tmp(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_size="16Mi")
    assert config["root"] == {"path": "rootfs", "readonly": True}
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert "size=16777216" in mounts["/tmp"]["options"] and mounts["/tmp"]["type"] == "tmpfs"
    binds = [m for m in config["mounts"] if m["type"] == "bind"]
    assert binds and all({"ro", "nosuid", "nodev"} <= set(m["options"]) for m in binds)
    assert mounts[MOUNT_DIR]["source"] == str(tmp_path / "files")
    assert not any(m["destination"].startswith(("/root", "/home", "/var", "/run")) for m in binds)


def test_the_sandbox_has_its_own_namespaces_and_cgroup(tmp_path: Path) -> None:
    linux = _config(tmp_path)["linux"]
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "network", "ipc", "uts", "mount"}
    assert linux["cgroupsPath"] == "/sandq/sq-unit"


def test_the_environment_replaces_the_hosts_configuration_and_dev_shm_is_sized(tmp_path: Path) -> None:
    mounts = {m["destination"]: m for m in _config(tmp_path)["mounts"]}
    assert mounts[MOUNT_POINT]["source"] == str(tmp_path / "env") and "ro" in mounts[MOUNT_POINT]["options"]
    assert not [d for d in mounts if d.startswith("/etc/") and d != "/etc/alternatives"]
    shm = mounts["/dev/shm"]
    assert shm["type"] == "tmpfs"
    assert {f"size={SHM_BYTES}", "noexec", "nosuid", "nodev", "mode=1777"} <= set(shm["options"])


def test_a_bundle_without_quota_boots_at_its_weight_and_keeps_every_other_limit(tmp_path: Path) -> None:
    settings = make_settings("redis://unused", tmp_path)
    shape = Shape("500m", "512Mi")
    write_bundle(tmp_path / "limited", shape, settings, "sq-limited", shares=INTERACTIVE_SHARES)
    write_bundle(tmp_path / "warm", shape, settings, "sq-warm", shares=BOOT_SHARES, quota=False)
    limited = json.loads((tmp_path / "limited" / "config.json").read_text())
    warm = json.loads((tmp_path / "warm" / "config.json").read_text())
    assert limited["linux"]["resources"]["cpu"] == {
        "shares": INTERACTIVE_SHARES, "quota": shape.cpu_quota_us(), "period": 100_000
    }
    assert shape.cpu_quota_us() == 50_000
    assert warm["linux"]["resources"]["cpu"] == {"shares": BOOT_SHARES}  # runsc never writes cpu.cfs_*
    assert warm["linux"]["resources"]["memory"] == limited["linux"]["resources"]["memory"]
    assert warm["linux"]["cgroupsPath"] == "/sandq/sq-warm"
    for key in ("process", "mounts", "root"):
        assert warm[key] == limited[key]
