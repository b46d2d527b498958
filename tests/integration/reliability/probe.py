"""``sandq worker`` with a probe: every task start is recorded in Redis for the reliability tests.

Run as ``python -m tests.integration.reliability.probe worker ...``. Each start appends a JSON record
(id, pid, time, retries) to the list ``probe_key(queue)``; pool processes inherit the hook.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery.signals import task_prerun

from sandq.settings import get_settings


def probe_key(queue: str) -> str:
    """The Redis list the probe of workers on ``queue`` appends to."""
    return f"probe:{queue}"


@task_prerun.connect
def _record_start(task_id: str, task: Any, **_: object) -> None:
    settings = get_settings()
    record = {"id": task_id, "pid": os.getpid(), "at": time.time(), "retries": task.request.retries}
    with redis.Redis.from_url(settings.redis_url) as client:
        client.rpush(probe_key(settings.queue), json.dumps(record))


if __name__ == "__main__":
    from sandq.cli import app

    app()
