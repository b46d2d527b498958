"""The sandbox environment: its hash, an idempotent build, validation.

Real virtualenvs, real pip and the real sandbox interpreter, offline: the locks here
install small wheels that the tests write themselves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import marshal
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from sandq.sandbox import environment
from sandq.sandbox.environment import (
    LOCK_NAME,
    MANIFEST,
    MOUNT_POINT,
    PYTHON_MINOR,
    SandboxEnvError,
    build,
    default_lock,
    ensure,
    env_hash,
    location,
    main,
    pinned,
    validate,
)
from sandq.settings import Settings

PYTHON = Settings().sandbox_python
LIBRARIES = {
    "numpy",
    "pandas",
    "matplotlib",
    "scipy",
    "scikit-learn",
    "pyarrow",
    "pillow",
    "sympy",
    "statsmodels",
}


def write_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel of module ``name`` whose ``VERSION`` is ``version``, with a console script."""
    dist = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\ndef main():\n    print(VERSION)\n",
        f"{dist}/METADATA": metadata,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\n{name} = {name}:main\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    write_wheel(directory, "tiny", "0.1")
    write_wheel(directory, "tiny", "0.2")
    write_wheel(directory, "addon", "1.0", requires=("tiny",))
    return directory


def offline(wheels: Path) -> str:
    return f"--no-index\n--find-links {wheels}\n"


@pytest.fixture
def lock(tmp_path: Path, wheels: Path) -> Path:
    path = tmp_path / "test.lock"
    tiny = wheels / "tiny-0.1-py3-none-any.whl"
    path.write_text(offline(wheels) + f"tiny==0.1 \\\n    --hash=sha256:{sha256(tiny)}\n")
    return path


def env_python(env: Path, code: str) -> str:
    return subprocess.run(
        [str(env / "bin" / "python3"), "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_hash_is_of_the_contents_of_the_lock_and_the_extra_file(tmp_path: Path, lock: Path) -> None:
    same = tmp_path / "elsewhere.lock"
    same.write_bytes(lock.read_bytes())
    assert env_hash(same) == env_hash(lock)
    extra = tmp_path / "extra.txt"
    extra.write_text("")
    assert env_hash(lock, extra) != env_hash(lock)
    extra.write_text("addon\n")
    with_addon = env_hash(lock, extra)
    assert with_addon != env_hash(lock)
    same.write_bytes(lock.read_bytes() + b"\n")
    assert env_hash(same) != env_hash(lock)
    # the boundary between lock and extra counts: moving a line from one to the other is another env
    moved_lock, moved_extra = tmp_path / "a", tmp_path / "b"
    moved_lock.write_bytes(lock.read_bytes() + b"addon\n")
    moved_extra.write_text("")
    assert env_hash(moved_lock, moved_extra) != with_addon


def test_the_shipped_lock_pins_every_library_with_a_hash() -> None:
    lock = default_lock()
    assert lock == Path(environment.__file__).with_name(LOCK_NAME)  # package data: an installed worker has it
    pins = pinned(lock)
    names = {pin.split("==")[0].lower() for pin in pins}
    assert names >= LIBRARIES
    assert all("==" in pin and " " not in pin for pin in pins)
    assert lock.read_text().count("--hash=sha256:") == len(pins)


def test_build_makes_a_read_only_compiled_env_once(tmp_path: Path, lock: Path) -> None:
    root = tmp_path / "envs"
    env = build(root, PYTHON, lock)
    assert env == root / env_hash(lock)
    assert sorted(p.name for p in root.iterdir()) == [".build.lock", env.name]  # no staging left
    assert env_python(env, "import sys, tiny; print(tiny.VERSION, sys.prefix)") == f"0.1 {env}"
    manifest = json.loads((env / MANIFEST).read_text())
    assert manifest["hash"] == env.name and manifest["python"] == PYTHON
    assert manifest["packages"] == {"tiny": "0.1"}
    assert manifest["python_version"].startswith(".".join(map(str, PYTHON_MINOR)) + ".")
    (pyc,) = (env / "lib").glob("python3.*/site-packages/tiny/__pycache__/__init__.*.pyc")
    header = pyc.read_bytes()
    assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, never checked against the source
    assert marshal.loads(header[16:]).co_filename.startswith(f"{MOUNT_POINT}/lib/")
    script = (env / "bin" / "tiny").read_text()  # where sandboxes see the interpreter, not the staging path
    assert script.startswith(f"#!{MOUNT_POINT}/bin/python3\n") and "staging" not in script
    writable = [p for p in (env, pyc, env / MANIFEST) if p.stat().st_mode & 0o222]
    assert writable == []
    before = (env.stat().st_ino, (env / MANIFEST).stat().st_mtime_ns)
    assert build(root, PYTHON, lock) == env
    assert (env.stat().st_ino, (env / MANIFEST).stat().st_mtime_ns) == before


def test_extra_requirements_go_on_top_and_keep_the_lock(tmp_path: Path, lock: Path, wheels: Path) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text(offline(wheels) + "addon\n")
    env = build(tmp_path / "envs", PYTHON, lock, extra)
    assert env.name == env_hash(lock, extra) != env_hash(lock)
    assert json.loads((env / MANIFEST).read_text())["packages"] == {"addon": "1.0", "tiny": "0.1"}
    extra.write_text(offline(wheels) + "tiny==0.2\n")  # contradicts the lock
    with pytest.raises(SandboxEnvError, match="pip install"):
        build(tmp_path / "envs", PYTHON, lock, extra)
    assert sorted(p.name for p in (tmp_path / "envs").iterdir()) == [".build.lock", env.name]


def test_validate_refuses_another_locks_env(tmp_path: Path, lock: Path, wheels: Path) -> None:
    env = build(tmp_path / "envs", PYTHON, lock)
    other = tmp_path / "other.lock"
    tiny = wheels / "tiny-0.2-py3-none-any.whl"
    other.write_text(offline(wheels) + f"tiny==0.2 --hash=sha256:{sha256(tiny)}\n")
    with pytest.raises(SandboxEnvError, match="another lock"):
        validate(env, PYTHON, other)
    renamed = env.rename(env.parent / env_hash(other))  # the right name, the wrong contents
    with pytest.raises(SandboxEnvError, match="another lock"):
        validate(renamed, PYTHON, other)
    with pytest.raises(SandboxEnvError, match="no sandbox environment"):
        validate(env, PYTHON, lock)


def test_validate_refuses_a_writable_env(tmp_path: Path, lock: Path) -> None:
    env = build(tmp_path / "envs", PYTHON, lock)
    assert validate(env, PYTHON, lock).packages == {"tiny": "0.1"}
    env.chmod(0o755)
    with pytest.raises(SandboxEnvError, match="writable"):
        validate(env, PYTHON, lock)


def test_another_python_minor_version_is_refused(tmp_path: Path, lock: Path) -> None:
    env = build(tmp_path / "envs", PYTHON, lock)
    fake = tmp_path / "python3.12"
    fake.write_text('#!/bin/sh\necho \'{"version": [3, 12, 1], "magic": "cb0d0d0a"}\'\n')
    fake.chmod(0o755)
    with pytest.raises(SandboxEnvError, match=r"is Python 3\.12\.1; the sandbox lock is for 3\.11"):
        validate(env, str(fake), lock)
    with pytest.raises(SandboxEnvError, match=r"3\.12\.1"):
        build(tmp_path / "other-envs", str(fake), lock)
    assert [p.name for p in (tmp_path / "other-envs").iterdir()] == [".build.lock"]


def test_a_failed_build_leaves_nothing(tmp_path: Path, lock: Path) -> None:
    bad = tmp_path / "bad.lock"
    bad.write_text(lock.read_text().replace("sha256:", "sha256:0"))
    with pytest.raises(SandboxEnvError, match="pip install"):
        build(tmp_path / "envs", PYTHON, bad)
    assert [p.name for p in (tmp_path / "envs").iterdir()] == [".build.lock"]


def test_command_line(tmp_path: Path, lock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "envs"
    assert main(["build", str(root), PYTHON, str(lock)]) == 0
    assert capsys.readouterr().out == f"{root / env_hash(lock)}\n"
    assert main(["build", str(root), PYTHON, str(tmp_path / "missing.lock")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sandbox environment: cannot read") and err.count("\n") == 1
    assert os.access(root / env_hash(lock), os.R_OK)


def test_ensure_builds_once_then_only_checks_and_remembers(
    tmp_path: Path, lock: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environment, "default_lock", lambda: lock)
    monkeypatch.setattr(environment, "_ready", {})
    settings = Settings(sandbox_env_dir=tmp_path / "envs")
    with pytest.raises(SandboxEnvError, match="no sandbox environment"):
        ensure(settings, build_missing=False)  # a backend never builds
    env = ensure(settings)
    assert env == location(settings) == tmp_path / "envs" / env_hash(lock)
    env.chmod(0o755)  # spoilt after it was checked: this process keeps what it checked
    assert ensure(settings, build_missing=False) == env
    monkeypatch.setattr(environment, "_ready", {})
    with pytest.raises(SandboxEnvError, match="writable"):  # a new process finds out
        ensure(settings, build_missing=False)


def test_hash_command_prints_the_shipped_locks_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash"]) == 0
    assert capsys.readouterr().out == f"{env_hash(default_lock())}\n"


def test_the_file_runs_alone_beside_the_lock_as_in_the_image_build(tmp_path: Path) -> None:
    """The sandbox image copies only these two files and runs the builder without sandq installed."""
    for source in (Path(environment.__file__), default_lock()):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    done = subprocess.run(
        [PYTHON, "-I", str(tmp_path / "environment.py"), "hash"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{env_hash(default_lock())}\n", "")
