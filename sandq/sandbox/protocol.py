"""The host side of the runner protocol: what a sandbox receives, and how its report is read.

Every backend ships the same bytes (a local sandbox reads its job on stdin, a pod from a
ConfigMap) and reads the same report document (``sandq.sandbox.runner`` writes it). The
protocol's constants live in the runner, which must stay a single stdlib-only file; they are
re-exported here for the host.
"""

from __future__ import annotations

import binascii
import functools
import importlib.util
import json
import marshal
import math
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from kubernetes.utils.quantity import parse_quantity
from pydantic import ValidationError

from sandq.contract import ExecutionRequest, SandboxReport
from sandq.sandbox import runner
from sandq.sandbox.runner import (
    CODE_FILE,
    FRAME_BEGIN,
    FRAME_END,
    INDEX_PLACEHOLDER,
    MOUNT_DIR,
    READY,
    RUNNER_FILE,
    SPEC_FILE,
    STARTED,
)
from sandq.settings import Settings

__all__ = [
    "ATTACHED_BOOTSTRAP",
    "CODE_FILE",
    "FRAME_BEGIN",
    "FRAME_END",
    "INDEXED_SPEC",
    "MOUNT_DIR",
    "READY",
    "RUNNER_FILE",
    "SPEC_FILE",
    "STARTED",
    "Printed",
    "ReportUnreadable",
    "Stop",
    "attached_command",
    "attached_payload",
    "execution_files",
    "job_document",
    "parse_frame",
    "pod_runner_spec",
    "read_report",
    "report_budget",
    "report_marker",
    "runner_command",
    "runner_source",
    "sandbox_files",
]

INDEXED_SPEC = f"{MOUNT_DIR}/spec-{INDEX_PLACEHOLDER}.json"
"""The spec argument of an Indexed Job's pods: the runner puts in its ``JOB_COMPLETION_INDEX``."""

_RUNNER_SOURCE = Path(runner.__file__).read_bytes()


class Stop(StrEnum):
    """Why the host stopped reading a sandbox before its report came: it must be killed."""

    TIMED_OUT = runner.TIMED_OUT
    OUTPUT_LIMIT = runner.OUTPUT_LIMIT
    NOT_STARTED = "not_started"
    """The runner never said it was ready."""


class ReportUnreadable(ValueError):
    """The report document is not what the runner writes (the program spoilt it)."""


@dataclass(frozen=True)
class Printed:
    """What the program wrote on its two streams, cut at the cap, and whether each was cut."""

    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    def fields(self) -> dict[str, object]:
        """The report's stream fields (decoded as UTF-8, undecodable bytes replaced)."""
        return {
            "stdout": self.stdout.decode("utf-8", errors="replace"),
            "stderr": self.stderr.decode("utf-8", errors="replace"),
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
        }


def read_report(document: bytes | str, printed: Printed | None = None) -> SandboxReport:
    """The runner's report document as a ``SandboxReport``.

    A local sandbox's report comes without the streams, which the host read itself
    (``printed``); a pod's carries them, base64-encoded. Raises ``ReportUnreadable``.
    """
    try:
        doc = json.loads(document)
        if printed is None:
            printed = Printed(
                binascii.a2b_base64(doc["stdout"]),
                binascii.a2b_base64(doc["stderr"]),
                bool(doc.get("stdout_truncated")),
                bool(doc.get("stderr_truncated")),
            )
        return SandboxReport.model_validate({**doc, **printed.fields()})
    except (ValueError, KeyError, TypeError, ValidationError, binascii.Error) as error:
        raise ReportUnreadable(str(error)) from None


def parse_frame(output: bytes | str) -> SandboxReport | None:
    """The report framed by ``FRAME_BEGIN`` in a pod's log, or None if there is none whole."""
    text = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else output
    begin = text.rfind(FRAME_BEGIN)
    end = text.find(FRAME_END, begin + 1) if begin >= 0 else -1
    if begin < 0 or end < 0:
        return None
    try:
        return read_report(text[begin + len(FRAME_BEGIN) : end])
    except ReportUnreadable:
        return None


def input_key(index: int, prefix: str = "in") -> str:
    """The flat file name under which input file ``index`` travels."""
    return f"{prefix}-{index}"


def runner_spec(
    request: ExecutionRequest, settings: Settings, code: str = CODE_FILE, inputs: str = "in"
) -> dict[str, object]:
    """The limits the runner enforces inside the sandbox, where its code and inputs are, and how many
    threads the libraries' pools may start (the CPU limit, rounded up)."""
    return {
        "code": code,
        "timeout_seconds": request.timeout_seconds,
        "threads": max(1, math.ceil(parse_quantity(request.cpu_limit))),
        "max_output_bytes": request.max_output_bytes,
        "max_output_files": settings.max_output_files,
        "max_output_files_bytes": settings.max_output_files_bytes,
        "inputs": [{"name": f.name, "key": input_key(i, inputs)} for i, f in enumerate(request.input_files)],
    }


def sandbox_files(request: ExecutionRequest, settings: Settings) -> dict[str, bytes]:
    """Map of file name to content for a pod's ``/sandq`` directory: code, runner, spec, inputs."""
    return {RUNNER_FILE: _RUNNER_SOURCE, **execution_files(request, settings)}


def report_budget(settings: Settings) -> int:
    """Most bytes of a pod's report, well under the size at which the kubelet rotates its log.

    ``GET pods/log`` returns only the current log file, so a report that straddled a rotation
    would be lost; the runner leaves out what does not fit (flagged as truncated). The margin
    covers the container runtime's prefix on each 16 KiB line chunk and stray output.
    """
    return settings.container_log_max_bytes * 15 // 16 - 64 * 1024


def pod_runner_spec(request: ExecutionRequest, settings: Settings, **where: str) -> dict[str, object]:
    """``runner_spec`` for a runner in a pod, whose report goes to its log: within ``report_budget``."""
    return {**runner_spec(request, settings, **where), "max_report_bytes": report_budget(settings)}


def execution_files(
    request: ExecutionRequest, settings: Settings, index: int | None = None
) -> dict[str, bytes]:
    """The files of one execution: ``main.py``, ``spec.json``, ``in-M``; of snippet ``index`` of an
    Indexed Job, ``main-N.py``, ``spec-N.json``, ``in-N-M`` (the runner is shipped once per Job)."""
    suffix = "" if index is None else f"-{index}"
    code = f"main{suffix}.py"
    inputs = f"in{suffix}"
    spec = pod_runner_spec(request, settings, code=code, inputs=inputs)
    files = {code: request.code.encode("utf-8"), f"spec{suffix}.json": json.dumps(spec).encode()}
    files.update({input_key(i, inputs): f.content for i, f in enumerate(request.input_files)})
    return files


def runner_source() -> bytes:
    """The runner script, as shipped into sandboxes."""
    return _RUNNER_SOURCE


def report_marker() -> str:
    """A fresh marker for the report of one local job, which the program cannot guess in advance.

    The program's own stdout comes before it; the program can only fake its own report
    by reading the marker out of the runner's memory on purpose. It starts with a NUL byte,
    which text never ends with, so that streaming holds back none of the program's text while
    it waits to see whether the marker follows (``sandq.sandbox.gvisor.streams``).
    """
    return f"\x00=====SANDQ-REPORT-{secrets.token_hex(16)}=====\n"


def job_document(
    request: ExecutionRequest, settings: Settings, marker: str, *, in_pod: bool = False
) -> bytes:
    """The job as one ``marshal`` document, for a runner that reads it from stdin.

    ``marshal`` is built into the interpreter, so the runner imports nothing to read it
    (json would cost it tens of ms under gVisor). It travels host to sandbox only: the
    host never unmarshals what a sandbox sends. ``marker`` precedes the runner's report;
    ``in_pod``: the runner reports to a pod's log (``pod_runner_spec``).
    """
    doc = {
        "spec": (pod_runner_spec if in_pod else runner_spec)(request, settings),
        "code": request.code.encode("utf-8"),
        "inputs": [(f.name, f.content) for f in request.input_files],
        "marker": marker,
    }
    return marshal.dumps(doc)


def runner_command(
    python: str,
    source: str = f"{MOUNT_DIR}/{SPEC_FILE}",
    runner_file: str = RUNNER_FILE,
    *,
    site: bool = True,
) -> list[str]:
    """The entry command: ``runner_file`` (source or ``.pyc``), isolated, on the spec (or ``-``: stdin).

    ``site=False`` starts it without ``site`` (``-S``): the runner then sets the virtualenv up
    itself (``runner.site_of_the_virtualenv``), for an environment without .pth files.
    """
    return [python, "-I", *([] if site else ["-S"]), f"{MOUNT_DIR}/{runner_file}", source]


ATTACHED_BOOTSTRAP = (
    "import importlib.util, marshal, sys\n"
    "i, m = sys.stdin.buffer, importlib.util.MAGIC_NUMBER\n"
    "def block():\n"
    "    n = i.readline().strip()\n"
    "    b = i.read(int(n)) if n.isdigit() else b''\n"
    "    return b if n.isdigit() and len(b) == int(n) else None\n"
    "s, c = block(), block()\n"
    "if s is not None and c is not None:\n"
    "    same = c[:len(m)] == m\n"
    f"    code = marshal.loads(c[len(m):]) if same else compile(s, '{MOUNT_DIR}/{RUNNER_FILE}', 'exec')\n"
    "    g = {'__name__': 'sandq_runner'}\n"
    "    exec(code, g)\n"
    "    g['attached']()\n"
)
"""A warm pod's whole program: read the runner from stdin, then let it read its job.

The runner comes twice, each after its length: as source, and compiled by the worker (behind
its interpreter's magic number); a pod whose Python has the same magic number runs the compiled
one (compiling cost about 20 ms of CPU under gVisor's ptrace platform), any other compiles the
source. The template that starts warm pods holds only this, so it does not change with sandq's
version. A cut-off runner or job runs nothing.
"""


def attached_command(python: str) -> list[str]:
    """The entry command of a warm pod: the bootstrap, isolated, waiting on stdin."""
    return [python, "-I", "-c", ATTACHED_BOOTSTRAP]


@functools.cache
def _runner_compiled() -> bytes:
    """The runner compiled by this interpreter, behind its magic number (as a .pyc starts)."""
    code = compile(_RUNNER_SOURCE, f"{MOUNT_DIR}/{RUNNER_FILE}", "exec", dont_inherit=True)
    return importlib.util.MAGIC_NUMBER + marshal.dumps(code)


def attached_payload(request: ExecutionRequest, settings: Settings) -> bytes:
    """What a warm pod's stdin receives: the runner's source, the runner compiled, then the job
    (``marshal``), each after its length on a line of its own (so that no end of stdin is needed)."""
    blocks = (_RUNNER_SOURCE, _runner_compiled(), job_document(request, settings, marker="", in_pod=True))
    return b"".join(b"%d\n%s" % (len(block), block) for block in blocks)
