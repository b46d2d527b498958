"""The files every sandbox receives, whatever the backend: code, runner, spec, inputs.

A pure function of the request and settings, so that the local backend (a
read-only bind mount) and the Kubernetes backend (a ConfigMap) ship the same
bytes.
"""

from __future__ import annotations

import json
import marshal
import secrets
from pathlib import Path

from sandq import sandbox_runner
from sandq.contract import ExecutionRequest
from sandq.settings import Settings

CODE_FILE = "main.py"
RUNNER_FILE = "runner.py"
SPEC_FILE = "spec.json"
MOUNT_DIR = "/sandq"
INDEXED_SPEC = f"{MOUNT_DIR}/spec-{sandbox_runner.INDEX_PLACEHOLDER}.json"
"""The spec argument of an Indexed Job's pods: the runner puts in its ``JOB_COMPLETION_INDEX``."""

_RUNNER_SOURCE = Path(sandbox_runner.__file__).read_bytes()


def input_key(index: int, prefix: str = "in") -> str:
    """The flat file name under which input file ``index`` travels."""
    return f"{prefix}-{index}"


def runner_spec(
    request: ExecutionRequest, settings: Settings, code: str = CODE_FILE, inputs: str = "in"
) -> dict[str, object]:
    """The limits the runner enforces inside the sandbox, and where its code and inputs are."""
    return {
        "code": code,
        "timeout_seconds": request.timeout_seconds,
        "max_output_bytes": request.max_output_bytes,
        "max_output_files": settings.max_output_files,
        "max_output_files_bytes": settings.max_output_files_bytes,
        "inputs": [{"name": f.name, "key": input_key(i, inputs)} for i, f in enumerate(request.input_files)],
    }


def sandbox_files(request: ExecutionRequest, settings: Settings) -> dict[str, bytes]:
    """Map of file name to content for the sandbox's ``/sandq`` directory."""
    spec = runner_spec(request, settings)
    files = {
        CODE_FILE: request.code.encode("utf-8"),
        RUNNER_FILE: _RUNNER_SOURCE,
        SPEC_FILE: json.dumps(spec).encode(),
    }
    files.update({input_key(i): f.content for i, f in enumerate(request.input_files)})
    return files


def indexed_files(request: ExecutionRequest, settings: Settings, index: int) -> dict[str, bytes]:
    """The files of snippet ``index`` of an Indexed Job: ``main-N.py``, ``spec-N.json``, ``in-N-M``.

    The runner itself is shipped once per Job (``RUNNER_FILE``), not per snippet.
    """
    code = f"main-{index}.py"
    spec = runner_spec(request, settings, code=code, inputs=f"in-{index}")
    files = {code: request.code.encode("utf-8"), f"spec-{index}.json": json.dumps(spec).encode()}
    files.update({input_key(i, f"in-{index}"): f.content for i, f in enumerate(request.input_files)})
    return files


def runner_source() -> bytes:
    """The runner script, as shipped into sandboxes."""
    return _RUNNER_SOURCE


def report_marker() -> str:
    """A fresh marker for the report of one local job, which the program cannot guess in advance.

    The program's own stdout comes before it; the program can only fake its own report
    by reading the marker out of the runner's memory on purpose.
    """
    return f"\n=====SANDQ-REPORT-{secrets.token_hex(16)}=====\n"


def job_document(request: ExecutionRequest, settings: Settings, marker: str) -> bytes:
    """The job as one ``marshal`` document, for a runner that reads it from stdin.

    ``marshal`` is built into the interpreter, so the runner imports nothing to read it
    (json would cost it tens of ms under gVisor). It travels host to sandbox only: the
    host never unmarshals what a sandbox sends. ``marker`` precedes the runner's report.
    """
    doc = {
        "spec": runner_spec(request, settings),
        "code": request.code.encode("utf-8"),
        "inputs": [(f.name, f.content) for f in request.input_files],
        "marker": marker,
    }
    return marshal.dumps(doc)


def runner_command(
    python: str, source: str = f"{MOUNT_DIR}/{SPEC_FILE}", runner: str = RUNNER_FILE
) -> list[str]:
    """The entry command: ``runner`` (source or ``.pyc``), in isolated mode, on the spec (or ``-``: stdin)."""
    return [python, "-I", f"{MOUNT_DIR}/{runner}", source]
