"""A pod's report stays under the log's rotation size: what does not fit is left out, flagged."""

from __future__ import annotations

import json

from sandq.contract import ExecutionRequest
from sandq.sandbox.protocol import execution_files, report_budget
from sandq.sandbox.runner import Capped, Job, _fit, _raw_room
from sandq.settings import Settings


def _job(budget: int | None, max_files: int = 32) -> Job:
    spec: dict[str, object] = {"max_output_files": max_files, "max_output_files_bytes": 8 << 20}
    if budget is not None:
        spec["max_report_bytes"] = budget
    return Job(spec, b"", [])


def _captured(size: int) -> Capped:
    stream = Capped(size)
    stream(b"x" * size)
    return stream


def test_pods_get_a_budget_under_the_rotation_size() -> None:
    settings = Settings(container_log_max_bytes=10 << 20)
    spec = json.loads(execution_files(ExecutionRequest(code="pass"), settings)["spec.json"])
    assert spec["max_report_bytes"] == report_budget(settings) < 10 << 20
    room = _raw_room(Job(spec, b"", []))
    assert room is not None
    assert room * 4 // 3 + 32 * 2048 + 64 * 1024 <= spec["max_report_bytes"]  # base64 and JSON fit
    assert _raw_room(_job(None)) is None  # a local sandbox's report goes through a pipe: no budget


def test_streams_that_fit_are_kept_and_files_get_the_rest() -> None:
    out, err = _captured(1000), _captured(500)
    assert _fit(out, err, 10_000) == 8_500
    assert (len(out.data), len(err.data), out.truncated, err.truncated) == (1000, 500, False, False)


def test_streams_over_the_room_are_cut_and_flagged() -> None:
    out, err = _captured(9000), _captured(3000)
    assert _fit(out, err, 10_000) == 0
    assert (len(out.data), len(err.data), out.truncated, err.truncated) == (7000, 3000, True, False)
    out, err = _captured(9000), _captured(9000)
    _fit(out, err, 10_000)
    assert (len(out.data), len(err.data), out.truncated, err.truncated) == (5000, 5000, True, True)
    out, err = _captured(100), _captured(20_000)
    _fit(out, err, 10_000)
    assert (len(out.data), len(err.data), out.truncated, err.truncated) == (100, 9900, False, True)
