"""Worker logs are JSON lines carrying the execution id, and never the user's output."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest
from celery.app.trace import LOG_SUCCESS
from celery.signals import task_postrun, task_prerun

import sandq.worker.process  # noqa: F401 (connects the task signals that tag records)
from sandq import ExecutionRequest, Status
from sandq.logging_setup import ExecutionContext, JsonFormatter
from tests.integration.observability.conftest import Observed

WAIT = 120


@pytest.fixture
def json_log() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ExecutionContext())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("celery.app.trace")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream, logger
    logger.removeHandler(handler)
    logger.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_during_a_task_carry_its_id(json_log: tuple[io.StringIO, logging.Logger]) -> None:
    stream, logger = json_log
    task_prerun.send(sender=None, task_id="exec-1")
    logger.warning("inside")
    task_postrun.send(sender=None, task_id="exec-1")
    logger.warning("outside")
    inside, outside = lines(stream)
    assert (inside["message"], inside["execution_id"], inside["level"]) == ("inside", "exec-1", "WARNING")
    assert outside["message"] == "outside" and "execution_id" not in outside


def test_success_line_keeps_the_status_not_the_output(json_log: tuple[io.StringIO, logging.Logger]) -> None:
    stream, logger = json_log
    result = {"status": "succeeded", "stdout": "USER-OUTPUT\n", "stderr": ""}
    logger.info(
        LOG_SUCCESS, {"id": "exec-2", "name": "sandq.execute", "return_value": repr(result), "runtime": 1.5}
    )
    (line,) = lines(stream)
    assert line["message"] == "Task sandq.execute[exec-2] succeeded in 1.5s: status=succeeded"
    assert line["execution_id"] == "exec-2"
    assert "USER-OUTPUT" not in stream.getvalue()


def test_worker_log_is_json_with_ids_and_without_user_output(observed: Observed) -> None:
    canary = "user-output-must-not-be-logged"
    result = observed.client.run(ExecutionRequest(code=f"print({canary!r})"), timeout=WAIT)
    assert result.status is Status.SUCCEEDED and result.stdout == canary + "\n"
    deadline = time.monotonic() + 30  # the result is stored before Celery logs the success line
    while f"{result.id}] succeeded" not in (text := observed.worker.log.read_text()):
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.1)
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    mine = [r for r in records if r.get("execution_id") == result.id]
    assert {r["logger"] for r in mine} >= {"celery.worker.strategy", "celery.app.trace"}, mine
    assert any(str(r["message"]).endswith("status=succeeded") for r in mine), mine
    assert canary not in text
