"""The in-sandbox runner: standard library only, shipped into every sandbox.

It runs the user's code as ``python main.py`` would, then writes one report (exit status,
output files) behind a marker on its stdout. Two ways to get the job and the streams:

* ``runner.py -`` (a local sandbox): signal readiness with one byte on stderr, read the job as
  one ``marshal`` document from stdin (the sandbox may start before its job is known; empty
  stdin means it is not wanted and it exits at once), and run the code in this very process:
  it writes straight to the pipes the worker reads, and the worker keeps the streams apart,
  caps them and keeps the deadline. Forking costs about 20 ms of CPU under gVisor's ptrace
  platform, a tenth of a sandbox. The report follows a marker the worker chose for this job.
* ``runner.py SPEC.json`` (a Kubernetes pod, whose log merges the streams): read the job from
  files beside the spec (in an Indexed Job, ``{index}`` in the path stands for the pod's
  ``JOB_COMPLETION_INDEX``), fork the code, capture its stdout and stderr apart up to the cap
  with the same loop as the worker (``pump``), keep the deadline, and put both streams in the
  report, which follows ``FRAME_BEGIN``.
* ``attached()`` (a warm Kubernetes pod, whose bootstrap reads this file from stdin and calls it):
  read the job as one ``marshal`` document, after its length, from stdin (the worker attached
  to the pod writes both), write ``STARTED``, then run it as a pod does (forked, the report
  after ``FRAME_BEGIN``). Nothing on stdout precedes ``STARTED``, and no user code runs
  before it: a worker that lost the stream tells from the pod's log whether the code may have run.

The report is only as trustworthy as the user's code (both run as the same user): the host
treats it as a report of that code's own outcome, caps its size, and classifies kills itself.
The constants below are the protocol; the host side (``sandq.sandbox.protocol``) imports them.
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

MOUNT_DIR = "/sandq"
"""Where the runner and the job's files are mounted, read-only."""
CODE_FILE = "main.py"
RUNNER_FILE = "runner.py"
SPEC_FILE = "spec.json"
CODE_NAME = f"{MOUNT_DIR}/{CODE_FILE}"
"""The file name the user's code runs as (tracebacks show it)."""
INDEX_PLACEHOLDER = "{index}"
WORKDIR = "/tmp"
OUTPUTS = "/tmp/outputs"
READY = b"\x06"
"""The byte a local runner writes on stderr once it waits for its job."""
FRAME_BEGIN = "\n=====SANDQ-RESULT-BEGIN=====\n"
"""The marker before a pod's report (a local report follows a marker chosen per job)."""
FRAME_END = "\n=====SANDQ-RESULT-END=====\n"
"""The end of every report."""
STARTED = "=====SANDQ-STARTED=====\n"
"""What a warm pod's runner writes once it holds its whole job, before any user code runs."""
TIMED_OUT = "timed_out"
OUTPUT_LIMIT = "output_limit_exceeded"
DONE = "done"
"""Why ``pump`` stopped early: the deadline, a cap, or a reader that has all it wanted."""
ENV_DIR = "/opt/sandq-env"
"""Where the sandbox environment is (``sandq.sandbox.environment.MOUNT_POINT``): the libraries."""
MPL_CONFIG_DIR = "/tmp/.matplotlib"
_MPL_PREBUILT = ENV_DIR + "/sandq-mplconfig"
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""The thread pools of BLAS and OpenMP (numpy, scipy, scikit-learn, pyarrow), sized to the CPU limit."""
_CHILD_ENV = {
    "PATH": ENV_DIR + "/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": MPL_CONFIG_DIR,
}


def _prepare_environment(spec: dict[str, Any]) -> None:
    """Before the user's code: size the thread pools to the CPU limit, and give matplotlib the
    environment's font cache and configuration.

    matplotlib wants a writable ``MPLCONFIGDIR`` (a read-only one costs a warning and a
    second of CPU rebuilding the font cache), so the prebuilt files are linked into it.
    """
    threads = str(spec.get("threads", 1))
    _CHILD_ENV.update(dict.fromkeys(_THREAD_VARIABLES, threads))
    with contextlib.suppress(OSError):  # no environment (an image without one), or an input took the name
        names = os.listdir(_MPL_PREBUILT)
        os.mkdir(MPL_CONFIG_DIR)
        for name in names:
            os.symlink(f"{_MPL_PREBUILT}/{name}", f"{MPL_CONFIG_DIR}/{name}")


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
    return _job_read()


def _job_read() -> Job | None:
    """The job, one ``marshal`` document on the rest of stdin; None on empty stdin."""
    data = sys.stdin.buffer.read()
    return _job_of(data) if data else None


def _job_of(data: bytes) -> Job:
    """The job in ``data`` (``marshal``); a cut-off document raises, as ``marshal`` needs all of it."""
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
    _prepare_environment(job.spec)
    exit_code = _run_as_main(job.code)
    if os.getpid() != owner:
        os._exit(exit_code)
    if owner == 1:  # the sandbox's init: -1 is everything the code started, and never ourselves
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(-1, _signal.SIGKILL)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    status = "succeeded" if exit_code == 0 else "failed"
    write_report(report, job.marker, _document(job, status, exit_code))
    os._exit(0)


def _document(job: Job, status: str, exit_code: int, files_bytes: int | None = None) -> dict[str, Any]:
    """The report: how the code ended, and the files it left in ``OUTPUTS`` (at most ``files_bytes``)."""
    spec = job.spec
    most = int(spec["max_output_files_bytes"]) if files_bytes is None else files_bytes
    files, files_cut = _collect_outputs(int(spec["max_output_files"]), most)
    return {
        "status": status,
        "exit_code": exit_code,
        "output_files": files,
        "output_files_truncated": files_cut,
    }


def write_report(fd: int, marker: str, document: dict[str, Any]) -> None:
    """Write ``document`` as JSON between ``marker`` and ``FRAME_END``, whole, on ``fd``."""
    data = (marker + to_json(document) + FRAME_END).encode("ascii")
    while data:
        data = data[os.write(fd, data) :]


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


class Deadline:
    """A point on the monotonic clock, which a reader may move (the host starts the clock at readiness)."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def move(self, seconds: float) -> None:
        """Put the deadline ``seconds`` from now."""
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds until the deadline (negative once past)."""
        return self.at - time.monotonic()


class Capped:
    """One stream's bytes up to ``cap``; a chunk past it sets ``truncated`` and stops the pump."""

    def __init__(self, cap: int) -> None:
        self.data = bytearray()
        self.cap = cap
        self.truncated = False

    def __call__(self, chunk: bytes) -> str | None:
        room = self.cap - len(self.data)
        self.data += chunk[: max(room, 0)]
        if len(chunk) > room:
            self.truncated = True
            return OUTPUT_LIMIT
        return None


def pump(
    readers: dict[int, Callable[[bytes], str | None]], deadline: Deadline, exited: Callable[[], bool]
) -> str | None:
    """Feed each pipe's chunks to its reader until every pipe is at EOF or something stops it.

    Returns why it stopped early: what a reader returned (``OUTPUT_LIMIT``, ``DONE``), or
    ``TIMED_OUT``; None at EOF, or once the watched process has ``exited`` and its output is
    drained (for at most ``DRAIN_SECONDS``: an orphan that keeps a pipe open and keeps writing,
    e.g. after ``os.setsid``, must not hold the result until the deadline). The same loop runs
    in a pod's runner and in the worker that reads a local sandbox.
    """
    poller = select.poll()
    open_fds = set(readers)
    for fd in open_fds:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    drain_end: float | None = None
    while open_fds:
        remaining = deadline.left()
        if remaining <= 0:
            return TIMED_OUT
        done = exited()
        if done:
            now = time.monotonic()
            drain_end = drain_end or now + DRAIN_SECONDS
            if now >= drain_end:
                return None
            remaining = min(remaining, 0.2, drain_end - now)
        else:  # notice the exit even while a leftover process holds the pipes open and silent
            remaining = min(remaining, EXIT_POLL_SECONDS)
        events = poller.poll(remaining * 1000)
        if not events and done:
            return None
        stop = None
        for fd, _ in events:  # the whole batch: output written before a report is read with it
            chunk = _read(fd)
            if chunk == b"":
                poller.unregister(fd)
                open_fds.discard(fd)
            elif chunk is not None and (why := readers[fd](chunk)) is not None:
                stop = stop or why
                if why == DONE:  # the other pipes hold what was written before the report: take it
                    for other in open_fds - {fd}:
                        while (more := _read(other)) and readers[other](more) is None:
                            pass
        if stop is not None:
            return stop
    return None


def _read(fd: int) -> bytes | None:
    """What a non-blocking pipe holds now (up to 64 KiB): ``b""`` at EOF, None if nothing yet."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


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


REPORT_SLACK = 64 * 1024
"""Bytes of a pod's report budget kept for its JSON beside the base64 of streams and files."""
FILE_SLACK = 2 * 1024
"""Bytes kept per output file for its name and MIME type in the report."""


def _raw_room(job: Job) -> int | None:
    """Raw bytes of streams and files whose base64 fits the report budget (``max_report_bytes``), if any."""
    budget = job.spec.get("max_report_bytes")
    if budget is None:
        return None
    spare = int(budget) - REPORT_SLACK - FILE_SLACK * int(job.spec["max_output_files"])
    return max(spare, 0) * 3 // 4


def _fit(stdout: Capped, stderr: Capped, room: int) -> int:
    """Cut the streams so that together they take at most ``room`` bytes (stderr keeps at least half
    of it if it needs it); return what is left for output files."""
    if len(stdout.data) + len(stderr.data) > room:
        keep_err = min(len(stderr.data), max(room // 2, room - len(stdout.data)))
        for stream, keep in ((stderr, keep_err), (stdout, room - keep_err)):
            if len(stream.data) > keep:
                del stream.data[keep:]
                stream.truncated = True
    return room - len(stdout.data) - len(stderr.data)


def run_forked(job: Job) -> dict[str, Any]:
    """Run ``job`` as a child process (a pod), capturing its streams; return the report document.

    A pod's report goes through its log, which the kubelet rotates at a size
    (``max_report_bytes`` stays under it): what does not fit is left out and flagged as
    truncated, output files first, then the streams.
    """
    _stage_inputs(job.inputs)
    _prepare_environment(job.spec)
    deadline = Deadline(float(job.spec["timeout_seconds"]))
    oom_before = _oom_kills()
    _block_signals()
    child = _Child(job.code)
    cap = int(job.spec["max_output_bytes"])
    stdout, stderr = Capped(cap), Capped(cap)
    stop = pump({child.stdout: stdout, child.stderr: stderr}, deadline, lambda: child.poll() is not None)
    if stop is None:
        try:
            child.wait(timeout=max(deadline.left(), 0))
        except TimeoutError:
            stop = TIMED_OUT
    _kill_everything(child)
    code = child.wait()
    if stop is not None:
        status = stop
    elif code == -_signal.SIGKILL and _oom_kills() > oom_before >= 0:
        status = "oom_killed"
    else:
        status = "succeeded" if code == 0 else "failed"
    room = _raw_room(job)
    files_bytes = None
    if room is not None:
        files_bytes = min(_fit(stdout, stderr, room), int(job.spec["max_output_files_bytes"]))
    document = _document(job, status, 128 - code if code < 0 else code, files_bytes)
    document.update(
        stdout=_b64(bytes(stdout.data)),
        stderr=_b64(bytes(stderr.data)),
        stdout_truncated=stdout.truncated,
        stderr_truncated=stderr.truncated,
    )
    return document


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


def attached() -> None:
    """A warm pod's runner: its job (its length on a line, then the document) from stdin, then
    ``STARTED``, then the framed report. A short or empty stdin (released unused) runs nothing."""
    stdin = sys.stdin.buffer
    size = stdin.readline().strip()
    data = stdin.read(int(size)) if size.isdigit() else b""
    if not data or len(data) != int(size):
        return
    job = _job_of(data)
    os.write(1, STARTED.encode("ascii"))
    write_report(1, FRAME_BEGIN, run_forked(job))


def site_of_the_virtualenv() -> None:
    """What ``site`` does for a virtualenv without .pth files, for a runner started with ``-S``.

    ``site`` would also look for ``sitecustomize`` all along the path and list the libraries'
    directory for .pth files: about 10 ms of CPU and 20 ms of each boot under gVisor. The host
    starts the runner so only when the environment has no .pth file.
    """
    import _sitebuiltins  # frozen: no file to read
    import builtins

    prefix = os.path.dirname(os.path.dirname(sys.executable))
    sys.prefix = sys.exec_prefix = prefix
    sys.path.append(f"{prefix}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")
    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    builtins.help = _sitebuiltins._Helper()


def main() -> None:
    """Entry point inside the sandbox: print exactly one framed result."""
    if sys.flags.no_site:
        site_of_the_virtualenv()
    if sys.argv[1] == "-":
        job = job_from_stdin()
        if job is not None:
            run_in_process(job)
        return
    write_report(1, FRAME_BEGIN, run_forked(job_from_files(spec_path(sys.argv[1]))))


if __name__ == "__main__":
    main()
