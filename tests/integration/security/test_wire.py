"""The wire: pickled messages are refused, and results are reachable only through unguessable ids."""

from __future__ import annotations

import inspect
import os
import pickle
import re
import time
import uuid
from pathlib import Path

import pytest
from kombu import Producer

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.broker.app import EXECUTE_TASK
from sandq.client.client import ExecutionHandle
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.usefixtures("worker")
WAIT = 120


class _Mkdir:
    """Unpickling this makes a directory: proof that a message was deserialized with pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def test_pickled_message_is_refused(
    client: Client, settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    task_id = uuid.uuid4().hex
    marker = tmp_path / "unpickled"
    submission = {"id": task_id, "enqueued_at": "2026-01-01T00:00:00Z", "request": {"code": "print(1)"}}
    body = pickle.dumps(((submission, _Mkdir(marker)), {}, {"callbacks": None, "errbacks": None}))
    headers = {"lang": "py", "task": EXECUTE_TASK, "id": task_id, "root_id": task_id, "retries": 0}
    with client.app.connection_for_write() as connection:
        Producer(connection).publish(
            body,
            routing_key=settings.queue,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers=headers,
            correlation_id=task_id,
        )
    deadline = time.monotonic() + 30
    while "Refusing to deserialize untrusted content of type pickle" not in worker.log.read_text():
        assert time.monotonic() < deadline, "the worker never refused the message"
        time.sleep(0.1)
    assert not marker.exists()  # never unpickled
    assert client.async_result(task_id).state != "SUCCESS"
    assert worker.proc.poll() is None
    assert client.run(ExecutionRequest(code="print('after')"), timeout=WAIT).stdout == "after\n"


def test_result_ids_are_random_uuid4_hex(client: Client) -> None:
    handles = [client.submit(ExecutionRequest(code="print(1)")) for _ in range(20)]
    for handle in handles:
        assert re.fullmatch(r"[0-9a-f]{32}", handle.id)
        assert uuid.UUID(hex=handle.id).version == 4  # 122 random bits
    assert len({h.id for h in handles}) == len(handles)
    result = handles[0].result(WAIT)
    assert result.status is Status.SUCCEEDED and result.id == handles[0].id
    assert client.redis.exists(f"celery-task-meta-{handles[0].id}")  # stored under its id alone
    for handle in handles[1:]:
        handle.result(WAIT)


def test_client_has_no_way_to_enumerate_results() -> None:
    enumerating = re.compile(r"(?:^|_)(?:list|scan|keys|all|enumerate|iter|search|find|history|recent)")
    for cls in (Client, ExecutionHandle):
        public = [name for name, _ in inspect.getmembers(cls) if not name.startswith("_")]
        assert public, cls
        assert [name for name in public if enumerating.search(name)] == [], cls
    for name in ("wait", "async_result"):  # every result accessor needs an id
        assert "execution_id" in inspect.signature(getattr(Client, name)).parameters
