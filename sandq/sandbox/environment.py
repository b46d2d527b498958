"""The sandbox environment: the pinned scientific stack that sandboxes import, built once per lock.

It is a virtualenv of the sandbox's own interpreter (``--without-pip``, so the standard
library stays the interpreter's own), with the lock's wheels installed hash-checked, the
operator's extra requirements on top, matplotlib's configuration and font cache inside,
byte-compiled once by that interpreter, then made read-only. Locally it lives in
``<sandbox_env_dir>/<hash>/`` and every sandbox bind-mounts it read-only at ``MOUNT_POINT``
and runs ``MOUNT_POINT/bin/python3``; the sandbox image builds the same at ``MOUNT_POINT``
with this very file (``python environment.py build ...``: it needs only the standard library).
The lock ships inside the package, beside this file, so an installed worker builds and checks
the environment it runs, and ``sandq doctor`` knows the hash an image should have.

A virtualenv rather than ``pip install --target``: its interpreter sees neither Debian's
``dist-packages`` nor their ``.pth`` start-up hooks (a sandbox boots faster than with the host's
site-packages), ``sys.executable`` carries the environment into subprocesses, and the
operator's extra requirements are resolved against what the lock installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandq.settings import Settings

MOUNT_POINT = "/opt/sandq-env"
"""Where a sandbox sees the environment (the image has it there too)."""
PYTHON_MINOR = (3, 11)
"""The interpreter minor version the lock is for: the sandbox's Python, locally and in the image."""
LOCK_NAME = "sandbox-requirements.lock"
MANIFEST = "sandq-env.json"
MATPLOTLIB_DIR = "sandq-mplconfig"
"""matplotlibrc and font cache, for a sandbox to link into its writable ``MPLCONFIGDIR``."""
_RECIPE = b"sandq-env/2\n"
"""Part of the hash: changes when the way the environment is built changes."""
_COMPILE_SKIP = r"/tests?/"
"""Packages' own test suites: nothing imports them, and they are half of all bytecode."""

_PROBE = (
    "import importlib.util, json, sys\n"
    "print(json.dumps({'version': list(sys.version_info[:3]), 'magic': importlib.util.MAGIC_NUMBER.hex()}))\n"
)
_LIST_PACKAGES = (
    "import importlib.metadata as m, json\n"
    "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))\n"
)
# Run by the environment's interpreter with a scratch MPLCONFIGDIR: keeps only matplotlib's
# own fonts (the image has no others, and a host's must not make plots differ between
# backends), so that no sandbox builds the font cache again.
_MATPLOTLIB_SETUP = """\
import os, sys
try:
    import matplotlib
    from matplotlib import font_manager
except ImportError:  # an environment without matplotlib
    sys.exit(0)
dest = sys.argv[1]
os.makedirs(dest)
ours = matplotlib.get_data_path()
manager = font_manager.fontManager
manager.ttflist = [f for f in manager.ttflist if f.fname.startswith(ours)]
manager.afmlist = [f for f in manager.afmlist if f.fname.startswith(ours)]
font_manager.json_dump(manager, os.path.join(dest, f"fontlist-v{font_manager.FontManager.__version__}.json"))
with open(os.path.join(dest, "matplotlibrc"), "w") as rc:
    rc.write("backend: Agg\\n")
"""


class SandboxEnvError(Exception):
    """The sandbox environment cannot be built, or the one on disk does not fit the settings."""


@dataclass(frozen=True)
class Manifest:
    """What an environment was built from and for (``sandq-env.json`` inside it)."""

    hash: str
    python: str
    python_version: str
    magic: str
    packages: dict[str, str]

    @classmethod
    def read(cls, env_dir: Path) -> Manifest:
        """The manifest of ``env_dir``."""
        try:
            data = json.loads((env_dir / MANIFEST).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as error:
            raise SandboxEnvError(f"{env_dir}: no readable {MANIFEST} ({error}); rebuild it") from error


def default_lock() -> Path:
    """The lock shipped with sandq, beside this file (package data; the image copies both to one place)."""
    lock = Path(__file__).with_name(LOCK_NAME)
    if not lock.is_file():
        raise SandboxEnvError(f"{lock} is missing: sandq is installed without its package data")
    return lock


def env_hash(lock: Path, extra: Path | None = None) -> str:
    """The environment's key: a digest of the lock and of the operator's extra requirements, if any."""
    digest = hashlib.sha256(_RECIPE)
    for path in (lock, extra):
        if path is not None:
            content = _read(path)
            digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()[:16]


def pinned(lock: Path) -> list[str]:
    """The lock's ``name==version`` pins, without hashes or options (the extras' constraints)."""
    pins = []
    for line in _read(lock).decode().splitlines():
        requirement = line.split("#", 1)[0].split(" --hash", 1)[0].strip().rstrip("\\").strip()
        if requirement and not requirement.startswith("-"):
            pins.append(requirement)
    return pins


def build(target_root: Path, python: str, lock: Path, extra: Path | None = None) -> Path:
    """The environment of ``lock`` (plus ``extra``) for ``python``: ``target_root/<hash>``, built if missing.

    Built in a staging directory renamed into place, under a lock file, so concurrent
    callers build it once; an existing one is only validated.
    """
    final = target_root / env_hash(lock, extra)
    target_root.mkdir(parents=True, exist_ok=True)
    with _exclusive(target_root / ".build.lock"):
        if not final.exists():
            staging = target_root / f".{final.name}.staging"
            shutil.rmtree(staging, ignore_errors=True)  # left by a build that died
            try:
                _populate(staging, python, lock, extra, final.name)
                _make_read_only(staging)
                staging.rename(final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    validate(final, python, lock, extra)
    return final


def validate(env_dir: Path, python: str, lock: Path, extra: Path | None = None) -> Manifest:
    """Check that ``env_dir`` is the environment of ``lock`` and ``extra``, built for ``python`` as it is now.

    Refuses another lock's environment (its name or manifest has another hash), one built by
    another interpreter, one whose bytecode that interpreter would not load (another magic
    number, e.g. after an upgrade), any interpreter but CPython ``PYTHON_MINOR``, and a
    writable environment.
    """
    expected = env_hash(lock, extra)
    if not env_dir.is_dir():
        raise SandboxEnvError(f"{env_dir}: no sandbox environment; build it with `make sandbox-env`")
    manifest = Manifest.read(env_dir)
    if env_dir.name != expected or manifest.hash != expected:
        raise SandboxEnvError(
            f"{env_dir}: built from another lock (hash {manifest.hash}, the lock's is {expected}); rebuild it"
        )
    interpreter = probe(python)
    if manifest.python != python or manifest.magic != interpreter["magic"]:
        raise SandboxEnvError(
            f"{env_dir}: built for {manifest.python} {manifest.python_version}, not for {python} "
            f"{interpreter['version']}; rebuild it"
        )
    if env_dir.stat().st_mode & 0o222:
        raise SandboxEnvError(f"{env_dir}: writable, so not a finished build; remove it and rebuild")
    return manifest


def probe(python: str) -> dict[str, str]:
    """``python``'s version (``"3.11.2"``) and bytecode magic number; only ``PYTHON_MINOR`` passes."""
    output = _run([python, "-I", "-c", _PROBE], f"run {python}")
    try:
        info = json.loads(output)
        version = tuple(info["version"])
    except (ValueError, KeyError, TypeError) as error:
        raise SandboxEnvError(f"{python} is not CPython (it printed {output[:80]!r})") from error
    if version[:2] != PYTHON_MINOR:
        raise SandboxEnvError(
            f"{python} is Python {_dotted(version)}; the sandbox lock is for {_dotted(PYTHON_MINOR)}"
        )
    return {"version": _dotted(version), "magic": info["magic"]}


_ready: dict[tuple[Path, str, Path | None], Path] = {}
"""The environments this process has built or validated, by the settings that name them."""


def location(settings: Settings) -> Path:
    """Where the environment the settings name is (or would be) built: ``sandbox_env_dir/<hash>``."""
    return settings.sandbox_env_dir / env_hash(default_lock(), settings.sandbox_extra_requirements)


def ensure(settings: Settings, *, build_missing: bool = True) -> Path:
    """The environment the settings name, validated once per process; built first if missing, unless
    ``build_missing`` is false (``make sandbox-env`` and ``sandq worker`` build, a backend only checks).
    """
    key = (settings.sandbox_env_dir, settings.sandbox_python, settings.sandbox_extra_requirements)
    if key not in _ready:
        lock, extra = default_lock(), settings.sandbox_extra_requirements
        if build_missing:
            _ready[key] = build(settings.sandbox_env_dir, settings.sandbox_python, lock, extra)
        else:
            env = location(settings)
            validate(env, settings.sandbox_python, lock, extra)
            _ready[key] = env
    return _ready[key]


def _populate(staging: Path, python: str, lock: Path, extra: Path | None, digest: str) -> None:
    interpreter = probe(python)
    _run([python, "-m", "venv", "--without-pip", str(staging)], "create the virtualenv")
    env_python = str(staging / "bin" / "python3")
    _pip(env_python, "--require-hashes", "-r", str(lock))
    if extra is not None:
        constraints = staging / "lock-constraints.txt"
        constraints.write_text("\n".join(pinned(lock)) + "\n")
        _pip(env_python, "-r", str(extra), "-c", str(constraints))
        constraints.unlink()
    _relocate_scripts(staging)
    scratch = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MPLCONFIGDIR": str(staging / ".mpl-scratch")}
    _run(
        [env_python, "-I", "-B", "-c", _MATPLOTLIB_SETUP, str(staging / MATPLOTLIB_DIR)],
        "set up matplotlib",
        env=scratch,
    )
    shutil.rmtree(staging / ".mpl-scratch", ignore_errors=True)
    _run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-x",
            _COMPILE_SKIP,
            "-s",
            str(staging),
            "-p",
            MOUNT_POINT,
            str(staging / "lib"),
        ],
        "byte-compile",
    )
    packages = json.loads(_run([env_python, "-I", "-c", _LIST_PACKAGES], "list the packages"))
    manifest = Manifest(
        digest, python, interpreter["version"], interpreter["magic"], dict(sorted(packages.items()))
    )
    (staging / MANIFEST).write_text(json.dumps(manifest.__dict__, indent=1) + "\n")


def _relocate_scripts(staging: Path) -> None:
    """Point the console scripts (``f2py``, ``fonttools``...) at the interpreter where sandboxes see it."""
    installed_with = f"#!{staging}/bin/python".encode()
    for script in (staging / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            content = script.read_bytes()
            if content.startswith(installed_with):
                script.write_bytes(f"#!{MOUNT_POINT}/bin/python3\n".encode() + content.partition(b"\n")[2])


def _pip(env_python: str, *args: str) -> None:
    """Install wheels only into the environment of ``env_python``, with the pip that runs sandq."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            env_python,
            "install",
            "--no-compile",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--root-user-action=ignore",
            *args,
        ],
        "pip install",
    )


def _make_read_only(root: Path) -> None:
    for path in _tree(root):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)


def _tree(root: Path) -> Iterator[Path]:
    """Every path under ``root``, ``root`` last (a directory after its contents)."""
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in (*files, *dirs):
            yield Path(directory, name)
    yield root


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    except OSError as error:
        raise SandboxEnvError(f"cannot {what}: {error}") from error
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SandboxEnvError(f"cannot {what} (exit {done.returncode}): " + " | ".join(detail))
    return done.stdout


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SandboxEnvError(f"cannot read {path}: {error.strerror}") from error


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    """``build ROOT PYTHON LOCK [EXTRA]``: build as told (the image does, without sandq installed) and
    print its path; ``hash [LOCK [EXTRA]]``: print the hash (of the shipped lock by default: an
    image's tag); no arguments: build what sandq's settings name (``make sandbox-env``).
    """
    parser = argparse.ArgumentParser(prog="environment", description=main.__doc__)
    commands = parser.add_subparsers(dest="command")
    explicit = commands.add_parser("build")
    explicit.add_argument("root", type=Path)
    explicit.add_argument("python")
    explicit.add_argument("lock", type=Path)
    explicit.add_argument("extra", type=Path, nargs="?")
    digest = commands.add_parser("hash")
    digest.add_argument("lock", type=Path, nargs="?")
    digest.add_argument("extra", type=Path, nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            printed = str(build(args.root, args.python, args.lock, args.extra))
        elif args.command == "hash":
            printed = env_hash(args.lock or default_lock(), args.extra)
        else:
            from sandq.settings import get_settings  # noqa: PLC0415 (the image runs this file without sandq)

            printed = str(ensure(get_settings()))
    except SandboxEnvError as error:
        print(f"sandbox environment: {error}", file=sys.stderr)
        return 1
    print(printed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
