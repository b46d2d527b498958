"""Celery task events reach an event receiver (what Flower shows)."""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

from sandq import ExecutionRequest
from tests.integration.observability.conftest import Observed


def test_task_succeeded_event_is_observable(observed: Observed) -> None:
    app = observed.client.app
    events: list[dict[str, Any]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(
            connection, handlers={"task-sent": events.append, "task-succeeded": events.append}
        )
        with receiver.consumer_context() as (conn, _, _):
            with suppress(TimeoutError):
                conn.drain_events(timeout=0.5)  # the first drain subscribes to the event stream
            handle = observed.client.submit(ExecutionRequest(code="print('evented')"))
            deadline = time.monotonic() + 60
            while not any(e["type"] == "task-succeeded" and e["uuid"] == handle.id for e in events):
                assert time.monotonic() < deadline, events
                with suppress(TimeoutError):
                    conn.drain_events(timeout=1)
    mine = {e["type"]: e for e in events if e.get("uuid") == handle.id}
    assert mine["task-sent"]["name"] == "sandq.execute"
    assert mine["task-succeeded"]["hostname"].startswith("sandq-")  # sandq-<pid>@<host>
    assert mine["task-succeeded"]["runtime"] > 0
