"""A queued message shows its executions by id: the user's code stays out of its headers.

Celery copies a repr of a task's arguments into each message's headers (``argsrepr``), which
task events and ``celery inspect`` show. Read here from the broker's own lists in Redis.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from sandq.client.client import Client
from sandq.settings import Settings
from tests.integration.queue.conftest import SettingsFactory, raw_redis

SECRET = "sk-live-0f1e2d3c4b5a"
CODE = f"token = {SECRET!r}\nprint(len(token))"


def queued_messages(settings: Settings) -> list[dict[str, Any]]:
    """Every message waiting in the lists of this deployment's queues (kombu keeps one list per queue
    and priority, named after the queue)."""
    redis = raw_redis(settings)
    messages = []
    for key in redis.scan_iter(match=f"{settings.queue}*"):
        if redis.type(key) == b"list":
            messages += [json.loads(raw) for raw in redis.lrange(key, 0, -1) if raw.startswith(b"{")]
    return [m for m in messages if "argsrepr" in m.get("headers", {})]


def test_a_submission_is_shown_by_its_id_not_its_code(
    queue_settings: SettingsFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings()
    handle = make_client(settings).submit({"code": CODE})
    [message] = queued_messages(settings)
    assert SECRET in base64.b64decode(message["body"]).decode()  # the code travels in the body, as it must
    assert SECRET not in message["headers"]["argsrepr"]
    assert handle.id in message["headers"]["argsrepr"]


def test_a_batch_message_is_shown_by_its_ids(
    queue_settings: SettingsFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings()
    sent = make_client(settings).submit_indexed([(f"snippet-{i}", {"code": CODE}) for i in range(3)])
    assert sent.consumed == 3
    [message] = queued_messages(settings)
    shown = message["headers"]["argsrepr"]
    assert SECRET not in shown
    assert "3 executions" in shown and "snippet-0" in shown


def test_another_tasks_message_keeps_celerys_repr(
    queue_settings: SettingsFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings()
    make_client(settings).app.send_task("not.sandq", args=[SECRET], queue=settings.queue)
    [message] = queued_messages(settings)
    assert SECRET in message["headers"]["argsrepr"]
