"""The task's gates under a Redis restart: they ride out a short outage, and a longer one sends the
message back to its queue instead of failing the execution. A real ``redis-server`` is stopped."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery.exceptions import Reject

from sandq.broker.slots import Parked, Verdict
from sandq.contract import Submission
from sandq.worker.process import Process
from sandq.worker.task import _through_gates
from tests.conftest import RedisServer, make_settings

OUTAGE = 1.0


def submission(execution_id: str) -> Submission:
    return Submission(id=execution_id, enqueued_at=datetime.now(UTC), request={"code": "print(1)"})


def park_of(item: Submission) -> Parked:
    return Parked(item.tenant, item.model_dump(mode="json"), "q", "interactive", 0)


def quiet_process(redis_url: str, base: Path, outage_seconds: float) -> Process:
    """A worker process's state, without its cancel listener: it would outlive the test, reconnecting
    to the stopped server forever."""
    settings = make_settings(redis_url, base, backend="simulated", redis_outage_seconds=outage_seconds)
    process = Process(settings)
    process.cancels._start_listening = lambda: None  # type: ignore[method-assign]
    return process


def gate(process: Process, item: Submission) -> object:
    with ExitStack() as held:
        return _through_gates(process, item, held, "", park_of(item))


def test_the_gates_ride_out_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    process = quiet_process(server.url, tmp_path, 10)
    try:
        assert gate(process, submission("before")) is Verdict.ACQUIRED
        server.stop()  # the scripts are gone too: a restarted Redis loads them again
        restart = threading.Timer(OUTAGE, server.start)
        restart.start()
        began = time.monotonic()
        assert gate(process, submission("during")) is Verdict.ACQUIRED
        assert time.monotonic() - began >= OUTAGE * 0.9  # it waited for Redis, it did not fail
        restart.join()
        assert process.redis.zscore(process.in_flight.keys.in_flight, "during") is None  # released after
    finally:
        process.redis.close()
        server.stop()


def test_a_longer_outage_requeues_the_message(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    process = quiet_process(server.url, tmp_path, 0.5)
    server.stop()
    try:
        with pytest.raises(Reject) as rejected:
            gate(process, submission("lost-redis"))
        assert rejected.value.requeue is True
    finally:
        process.redis.close()
