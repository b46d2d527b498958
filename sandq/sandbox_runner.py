"""The in-sandbox runner: standard library only, shipped into every sandbox.

In a pod it runs the user's code as a child process, captures stdout and stderr
apart up to a cap, enforces the deadline, collects ``/tmp/outputs/`` and prints one
framed JSON result document on its own stdout (see below for a local sandbox). The frame is only as
trustworthy as the user's code (both run as the same user), so the host
treats it as a report of that code's own outcome and caps its size.

Usage: ``python3 sandbox_runner.py SPEC.json`` reads the job from files beside
the spec (a Kubernetes ConfigMap; in an Indexed Job, ``{index}`` in the path
stands for the pod's ``JOB_COMPLETION_INDEX``); ``python3 sandbox_runner.py -`` signals
readiness with one byte on stderr, then reads the job as one ``marshal`` document
from stdin (a local sandbox, possibly started ahead of time). Empty stdin
means the sandbox is no longer wanted: it exits at once.

A local sandbox's runner does not fork: it runs the code in its own process, which
writes straight to the pipes the worker reads (the worker keeps the streams apart,
applies the caps and the deadline), and afterwards reports only the exit status and
the output files, behind a marker the worker chose for this job. Forking costs about
20 ms of CPU under gVisor's ptrace platform, a tenth of the whole sandbox. In a pod,
whose log merges the streams, the runner forks and captures them itself.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # ``signal`` would import enum
import atexit
import binascii
import contextlib
import io
import marshal
import os
import select
import sys
import time

# Imports are slow under gVisor's ptrace platform (tens of ms for json, typing or
# selectors, which pull in re and enum), and every execution pays for them. The runner
# imports only modules that the interpreter has loaded at start-up or that are built in;
# those that only some executions need (json, mimetypes, traceback, threading) are
# imported where they are used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any, NoReturn

FRAME_BEGIN = "\n=====SANDQ-RESULT-BEGIN=====\n"
FRAME_END = "\n=====SANDQ-RESULT-END=====\n"
WORKDIR = "/tmp"
OUTPUTS = "/tmp/outputs"
_CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/.matplotlib",
}


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _oom_kills() -> int:
    """The cgroup's OOM kill count, or -1 when it cannot be read."""
    for path in ("/sys/fs/cgroup/memory.events",):
        try:
            with open(path) as events:
                for line in events:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            continue
    return -1


DRAIN_SECONDS = 1.0
"""Longest time output is still read once the process being watched has exited."""
EXIT_POLL_SECONDS = 0.1
"""How often the reader checks whether the process being watched has exited."""
READY = b"\x06"
CODE_NAME = "/sandq/main.py"
INDEX_PLACEHOLDER = "{index}"


class Job:
    """What to run: the limits (spec), the code, the input files, and the report's marker (local)."""

    def __init__(
        self, spec: dict[str, Any], code: bytes, inputs: list[tuple[str, bytes]], marker: str = ""
    ) -> None:
        self.spec, self.code, self.inputs, self.marker = spec, code, inputs, marker


def job_from_files(spec_path: str) -> Job:
    """The job laid out as files: spec.json, the code and ``in-N`` beside it."""
    import json

    spec_dir = os.path.dirname(spec_path)
    with open(spec_path) as handle:
        spec = json.load(handle)
    with open(os.path.join(spec_dir, spec["code"]), "rb") as handle:
        code = handle.read()
    inputs = []
    for item in spec.get("inputs", []):
        with open(os.path.join(spec_dir, item["key"]), "rb") as handle:
            inputs.append((item["name"], handle.read()))
    return Job(spec, code, inputs)


def job_from_stdin() -> Job | None:
    """Signal readiness, then read the job (``marshal``, from the host); None on empty stdin."""
    os.write(2, READY)
    data = sys.stdin.buffer.read()
    if not data:
        return None
    doc = marshal.loads(data)  # noqa: S302 (written by the host, which the sandbox trusts)
    inputs = [(name, content) for name, content in doc["inputs"]]
    return Job(doc["spec"], doc["code"], inputs, doc["marker"])


def _stage_inputs(inputs: list[tuple[str, bytes]]) -> None:
    os.makedirs(OUTPUTS, exist_ok=True)
    for name, content in inputs:
        target = os.path.join(WORKDIR, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as dst:
            dst.write(content)


def _user_main(source: bytes, out_w: int, err_w: int) -> NoReturn:
    """In the forked child: become a fresh ``python main.py`` and run the code.

    Forking the already-started runner instead of starting a second
    interpreter saves a whole interpreter start-up inside the sandbox.
    """
    os.setsid()
    _signal.pthread_sigmask(_signal.SIG_SETMASK, _SAVED_MASK)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, 1024)
    os._exit(_run_as_main(source))


class _WholeWrites(io.FileIO):
    """An unbuffered stream whose ``write`` writes everything, as a buffered one would.

    A pipe from the host (a local sandbox's stdout) may take part of a large write, and
    ``TextIOWrapper`` ignores what a raw stream did not take.
    """

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += super().write(view[done:]) or 0
        return done


def _run_as_main(source: bytes) -> int:
    """Run ``source`` in this process as ``python main.py`` would, on fds 0-2; return its exit status."""
    os.chdir(WORKDIR)
    os.environ.clear()
    os.environ.update(_CHILD_ENV)
    sys.stdout = io.TextIOWrapper(_WholeWrites(1, "w", closefd=False), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(
        _WholeWrites(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr  # type: ignore[misc]
    sys.argv = [CODE_NAME]
    sys.path.insert(0, WORKDIR)
    main = _main_module(source)
    exit_code = 0
    try:
        compiled = compile(source, CODE_NAME, "exec", dont_inherit=True)
        exec(compiled, main.__dict__)
    except SystemExit as stop:
        exit_code = _exit_status(stop)
    except BaseException as error:  # the user's code failed: report it like Python does
        import traceback

        traceback.print_exception(
            type(error), error, error.__traceback__.tb_next if error.__traceback__ else None
        )
        exit_code = 1
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the user's code may have closed them
            stream.flush()
    return exit_code


def run_in_process(job: Job) -> NoReturn:
    """Run ``job`` in this very process (a local sandbox), then write the report behind its marker.

    The code writes straight to fds 1 and 2, which the worker reads and caps, and the
    worker enforces the deadline. Afterwards the runner kills what the code left behind,
    silences fds 1 and 2 (a leftover thread cannot write into the report), and writes
    the exit status and the output files on a copy of stdout. A process the code forked
    that runs to the end of the code exits there, as under ``python main.py``; code that
    ends the process itself (``os._exit``, a fatal signal) leaves no report, and the
    worker reads its exit status from the sandbox's.
    """
    owner = os.getpid()
    report = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    _stage_inputs(job.inputs)
    exit_code = _run_as_main(job.code)
    if os.getpid() != owner:
        os._exit(exit_code)
    if owner == 1:  # the sandbox's init: -1 is everything the code started, and never ourselves
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(-1, _signal.SIGKILL)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    spec = job.spec
    files, files_cut = _collect_outputs(int(spec["max_output_files"]), int(spec["max_output_files_bytes"]))
    document = {
        "status": "succeeded" if exit_code == 0 else "failed",
        "exit_code": exit_code,
        "output_files": files,
        "output_files_truncated": files_cut,
    }
    data = (job.marker + to_json(document) + FRAME_END).encode("ascii")
    while data:
        data = data[os.write(report, data) :]
    os._exit(0)


_SAVED_MASK: set[int] = set()
_UNTOUCHED_SIGNALS = {_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD}


def _block_signals() -> None:
    """Make the runner deaf to signals the user's code may send it (all run as one uid).

    A SIGTERM, SIGINT or SIGHUP aimed at the runner (e.g. ``os.kill(os.getppid(), ...)``)
    would otherwise end the sandbox without a report, which the host must treat as an
    infrastructure fault and retry. Linux ignores such signals for a PID namespace's
    init; gVisor does not. Blocked, they stay pending until the runner exits; the user's
    process gets the mask back (one system call each, where ignoring and restoring every
    signal took a hundred). SIGKILL and SIGSTOP cannot be blocked.
    """
    blocked = set(_signal.valid_signals()) - _UNTOUCHED_SIGNALS
    _SAVED_MASK.update(_signal.pthread_sigmask(_signal.SIG_BLOCK, blocked))


class _SourceLoader:
    """The user's module's ``__loader__``: lets tracebacks, warnings and ``inspect`` quote its lines.

    ``linecache`` asks for them only when it needs them, so a run without a traceback
    does not import it (and tokenize, re and enum with it).
    """

    def __init__(self, source: bytes) -> None:
        self.source = source

    def get_source(self, name: str) -> str:
        return self.source.decode("utf-8", errors="replace")


def _main_module(source: bytes) -> ModuleType:
    """A fresh ``__main__`` module for the user's code, as ``python main.py`` makes."""
    main = type(sys)("__main__")
    main.__dict__.update(__file__=CODE_NAME, __loader__=_SourceLoader(source), __builtins__=__builtins__)
    sys.modules["__main__"] = main
    return main


def _exit_status(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code & 0xFF
    print(stop.code, file=sys.stderr)
    return 1


class _Child:
    """The forked user process and the read ends of its stdout and stderr."""

    def __init__(self, source: bytes) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _user_main(source, out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        self.pid = pid
        self.stdout, self.stderr = out_r, err_r
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise TimeoutError
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode


def capture_streams(
    out_fd: int,
    err_fd: int,
    caps: tuple[int, int],
    deadline: float,
    exited: Callable[[], bool],
) -> tuple[bytes, bytes, bool, bool, str | None]:
    """Read two pipes apart until EOF, a cap, or the deadline.

    Returns both buffers, whether each was cut at its cap, and why reading
    stopped early: ``"output_limit_exceeded"``, ``"timed_out"`` or None.
    """
    buffers = {out_fd: bytearray(), err_fd: bytearray()}
    limits = {out_fd: caps[0], err_fd: caps[1]}
    truncated = {out_fd: False, err_fd: False}
    stop: str | None = None
    drain_end: float | None = None
    poller = select.poll()
    open_fds = set(buffers)
    for fd in buffers:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    while open_fds and stop is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop = "timed_out"
            break
        done = exited()
        if done:
            # Drain what is left, but do not wait on grandchildren: an orphan that keeps
            # writing (e.g. after ``os.setsid``) must not hold the result until the deadline.
            now = time.monotonic()
            drain_end = drain_end or now + DRAIN_SECONDS
            if now >= drain_end:
                break
            remaining = min(remaining, 0.2, drain_end - now)
        else:  # notice the exit even while a grandchild holds the pipes open and silent
            remaining = min(remaining, EXIT_POLL_SECONDS)
        events = poller.poll(remaining * 1000)
        if not events and done:
            break
        for fd, _ in events:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            buf = buffers[fd]
            room = limits[fd] - len(buf)
            buf += chunk[: max(room, 0)]
            if len(chunk) > room:
                truncated[fd] = True
                stop = "output_limit_exceeded"
    return bytes(buffers[out_fd]), bytes(buffers[err_fd]), truncated[out_fd], truncated[err_fd], stop


def _kill_everything(child: _Child) -> None:
    """Kill the child and every process it left behind (all run as our uid).

    Signalling -1 reaches every process we may signal: only as the sandbox's init (pid 1, in a
    pid namespace of its own) does that mean "everything the user's code started"; run by hand
    on a host, the runner must not kill the host's processes.
    """
    for target in (-child.pid, -1) if os.getpid() == 1 else (-child.pid,):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, _signal.SIGKILL)
    child.wait()


def _collect_outputs(max_files: int, max_bytes: int) -> tuple[list[dict[str, str]], bool]:
    files: list[dict[str, str]] = []
    total = 0
    truncated = False
    for root, dirs, names in os.walk(OUTPUTS, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            size = os.path.getsize(path)
            if len(files) >= max_files or total + size > max_bytes:
                truncated = True
                continue
            with open(path, "rb") as handle:
                content = handle.read(size)
            total += len(content)
            rel = os.path.relpath(path, OUTPUTS)
            import mimetypes

            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
            files.append({"name": rel, "content": _b64(content), "mime_type": mime})
    return files, truncated


def run(job: Job) -> dict[str, Any]:
    """Run ``job`` and return the result document."""
    spec = job.spec
    _stage_inputs(job.inputs)
    deadline = time.monotonic() + float(spec["timeout_seconds"])
    oom_before = _oom_kills()
    _block_signals()
    child = _Child(job.code)
    cap = int(spec["max_output_bytes"])
    stdout, stderr, out_cut, err_cut, stop = capture_streams(
        child.stdout, child.stderr, (cap, cap), deadline, lambda: child.poll() is not None
    )
    if stop is None:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            stop = "timed_out"
    _kill_everything(child)
    code = child.wait()
    exit_code = 128 - code if code < 0 else code
    if stop is not None:
        status = stop
    elif code == -_signal.SIGKILL and _oom_kills() > oom_before >= 0:
        status = "oom_killed"
    else:
        status = "succeeded" if code == 0 else "failed"
    files, files_cut = _collect_outputs(int(spec["max_output_files"]), int(spec["max_output_files_bytes"]))
    return {
        "status": status,
        "exit_code": exit_code,
        "stdout": _b64(stdout),
        "stderr": _b64(stderr),
        "stdout_truncated": out_cut,
        "stderr_truncated": err_cut,
        "output_files": files,
        "output_files_truncated": files_cut,
    }


def _quote(text: str) -> str:
    """``text`` as a JSON string, escaped to ASCII as ``json.dumps`` does."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return '"' + "".join(c if " " <= c <= "~" and c not in '"\\' else _escape(c) for c in text) + '"'


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code > 0xFFFF:  # a surrogate pair, as JSON spells characters beyond the BMP
        code -= 0x10000
        return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"
    return f"\\u{code:04x}"


def to_json(value: object) -> str:
    """The result document as JSON (dicts, lists, bools, ints, strings), without importing json."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_quote(key)}: {to_json(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"not in a result document: {type(value).__name__}")


def spec_path(argument: str) -> str:
    """The spec file named by ``argument``, with an Indexed Job pod's own index put in."""
    if INDEX_PLACEHOLDER not in argument:
        return argument
    return argument.replace(INDEX_PLACEHOLDER, str(int(os.environ["JOB_COMPLETION_INDEX"])))


def main() -> None:
    """Entry point inside the sandbox: print exactly one framed result."""
    if sys.argv[1] == "-":
        job = job_from_stdin()
        if job is not None:
            run_in_process(job)
        return
    document = run(job_from_files(spec_path(sys.argv[1])))
    sys.stdout.write(FRAME_BEGIN + to_json(document) + FRAME_END)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
