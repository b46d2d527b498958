"""The host side of the runner protocol: what a sandbox receives, and reading its report back."""

from __future__ import annotations

import base64
import importlib.util
import json
import marshal
import subprocess
import sys

import pytest

from sandq.contract import ExecutionRequest, File, Status
from sandq.sandbox.protocol import (
    FRAME_BEGIN,
    FRAME_END,
    MOUNT_DIR,
    RUNNER_FILE,
    Printed,
    ReportUnreadable,
    attached_command,
    attached_payload,
    execution_files,
    job_document,
    parse_frame,
    read_report,
    report_budget,
    report_marker,
    runner_command,
    runner_source,
    sandbox_files,
)
from sandq.settings import Settings

SETTINGS = Settings()
REQUEST = ExecutionRequest(
    code="print('é')", timeout_seconds=7, input_files=[File(name="data/a.csv", content=b"x,y\n")]
)


def _pod_document(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "status": "failed", "exit_code": 3,
        "stdout": base64.b64encode("out é\n".encode()).decode(), "stderr": base64.b64encode(b"\xff").decode(),
        "stdout_truncated": True, "stderr_truncated": False,
        "output_files": [
            {"name": "r.txt", "content": base64.b64encode(b"res").decode(), "mime_type": "text/plain"}
        ],
        "output_files_truncated": False,
    }
    doc.update(changes)
    return doc


def test_a_pod_report_carries_its_streams_in_base64() -> None:
    report = read_report(json.dumps(_pod_document()))
    assert (report.status, report.exit_code) == (Status.FAILED, 3)
    assert (report.stdout, report.stderr) == ("out é\n", "\ufffd")
    assert report.stdout_truncated and not report.stderr_truncated
    assert [(f.name, f.content) for f in report.output_files] == [("r.txt", b"res")]


def test_a_local_report_takes_the_streams_the_host_read() -> None:
    document = json.dumps({"status": "succeeded", "exit_code": 0, "output_files": [],
                           "output_files_truncated": True})
    report = read_report(document, Printed(b"hi\n", b"warn\n", False, True))
    assert (report.status, report.stdout, report.stderr) == (Status.SUCCEEDED, "hi\n", "warn\n")
    assert report.stderr_truncated and report.output_files_truncated


@pytest.mark.parametrize("document", [
    "not json", "[]", json.dumps({"status": "exploded", "exit_code": 0}),
    json.dumps(_pod_document(stdout="%%%not base64")), json.dumps({"exit_code": 1}),
])
def test_a_spoilt_report_is_unreadable(document: str) -> None:
    with pytest.raises(ReportUnreadable):
        read_report(document)


def test_the_last_whole_frame_of_a_pod_log_is_the_report() -> None:
    fake = FRAME_BEGIN + json.dumps(_pod_document(exit_code=99)) + FRAME_END
    real = FRAME_BEGIN + json.dumps(_pod_document()) + FRAME_END
    report = parse_frame(("noise\n" + fake + "more\n" + real).encode())
    assert report is not None and report.exit_code == 3


@pytest.mark.parametrize("log", [
    "no frame at all", FRAME_BEGIN + json.dumps(_pod_document()), FRAME_BEGIN + "{broken" + FRAME_END,
])
def test_a_log_without_a_whole_readable_frame_has_no_report(log: str) -> None:
    assert parse_frame(log) is None


def test_a_job_carries_the_code_inputs_limits_and_marker() -> None:
    marker = report_marker()
    doc = marshal.loads(job_document(REQUEST, SETTINGS, marker))
    assert doc["code"] == "print('é')".encode()
    assert doc["inputs"] == [("data/a.csv", b"x,y\n")]
    assert doc["marker"] == marker
    assert doc["spec"]["timeout_seconds"] == 7
    assert doc["spec"]["max_output_bytes"] == REQUEST.max_output_bytes
    assert doc["spec"]["max_output_files"] == SETTINGS.max_output_files
    assert doc["spec"]["threads"] == 1  # the default 500m, rounded up


@pytest.mark.parametrize(("cpu_limit", "threads"), [("100m", 1), ("1", 1), ("1500m", 2), ("2", 2)])
def test_the_libraries_thread_pools_follow_the_cpu_limit(cpu_limit: str, threads: int) -> None:
    request = REQUEST.model_copy(update={"cpu_limit": cpu_limit, "cpu_requested": "100m"})
    (spec,) = [json.loads(v) for k, v in execution_files(request, SETTINGS).items() if k == "spec.json"]
    assert spec["threads"] == threads


def test_report_markers_are_fresh_and_not_the_pods() -> None:
    markers = {report_marker() for _ in range(100)}
    assert len(markers) == 100 and FRAME_BEGIN not in markers


def test_the_files_of_one_execution_and_of_an_indexed_snippet() -> None:
    single = sandbox_files(REQUEST, SETTINGS)
    assert sorted(single) == ["in-0", "main.py", RUNNER_FILE, "spec.json"]
    assert single[RUNNER_FILE] == runner_source()
    assert json.loads(single["spec.json"])["inputs"] == [{"name": "data/a.csv", "key": "in-0"}]
    snippet = execution_files(REQUEST, SETTINGS, 4)
    assert sorted(snippet) == ["in-4-0", "main-4.py", "spec-4.json"]
    spec = json.loads(snippet["spec-4.json"])
    assert spec["code"] == "main-4.py" and spec["inputs"] == [{"name": "data/a.csv", "key": "in-4-0"}]


def test_the_runner_command_is_isolated_python_on_the_spec_or_stdin() -> None:
    runner, spec = f"{MOUNT_DIR}/{RUNNER_FILE}", f"{MOUNT_DIR}/spec.json"
    assert runner_command("python3") == ["python3", "-I", runner, spec]
    assert runner_command("/usr/bin/python3", "-", "runner.pyc")[-2:] == [f"{MOUNT_DIR}/runner.pyc", "-"]
    assert runner_command("python3", site=False) == ["python3", "-I", "-S", runner, spec]


# ---------------------------------------------------------------------------- a warm pod's stdin


def _blocks(payload: bytes) -> list[bytes]:
    blocks = []
    while payload:
        size, payload = payload.split(b"\n", 1)
        blocks.append(payload[: int(size)])
        payload = payload[int(size):]
    return blocks


def test_attached_payload_is_the_runner_twice_then_the_job_each_after_its_length() -> None:
    source, compiled, job = _blocks(attached_payload(REQUEST, SETTINGS))
    assert source == runner_source()
    magic = importlib.util.MAGIC_NUMBER
    assert compiled[: len(magic)] == magic
    assert marshal.loads(compiled[len(magic):]).co_filename == f"{MOUNT_DIR}/{RUNNER_FILE}"
    assert marshal.loads(job) == marshal.loads(job_document(REQUEST, SETTINGS, marker="", in_pod=True))


def test_a_pods_runner_keeps_its_report_within_the_log_budget_a_local_one_has_none() -> None:
    """A pod's report goes to its log, read once (``GET pods/log`` sees only the current file):
    the Job pod's spec and the warm pod's job both carry the budget; a local job has no log."""
    (spec,) = [json.loads(v) for k, v in execution_files(REQUEST, SETTINGS).items() if k == "spec.json"]
    warm = marshal.loads(_blocks(attached_payload(REQUEST, SETTINGS))[2])["spec"]
    local = marshal.loads(job_document(REQUEST, SETTINGS, report_marker()))["spec"]
    assert spec["max_report_bytes"] == warm["max_report_bytes"] == report_budget(SETTINGS)
    assert "max_report_bytes" not in local
    assert {k: v for k, v in warm.items() if k != "max_report_bytes"} == local


@pytest.mark.parametrize(
    "cut", ["empty", "in the header", "in the runner", "in the compiled runner", "no job", "in the job"]
)
def test_a_cut_off_payload_runs_nothing(cut: str) -> None:
    """The bootstrap runs the runner only when its source came whole, the runner the code only when
    its job did; before either, nothing is written on stdout (no STARTED)."""
    payload = attached_payload(REQUEST, SETTINGS)
    source, compiled, _ = _blocks(payload)
    source_end = payload.index(b"\n") + 1 + len(source)
    runner_end = payload.index(b"\n", source_end) + 1 + len(compiled)
    at = {"empty": 0, "in the header": 2, "in the runner": source_end - 100,
          "in the compiled runner": runner_end - 100, "no job": runner_end,
          "in the job": len(payload) - 5}[cut]
    done = subprocess.run(attached_command(sys.executable), input=payload[:at], capture_output=True,
                          timeout=60, check=False)
    assert (done.stdout, done.stderr, done.returncode) == (b"", b"", 0)  # no STARTED, no complaint
