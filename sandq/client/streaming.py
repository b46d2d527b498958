"""Following an execution's live output from sync code: its chunks as they come, then its result.

Used by ``ExecutionHandle.stream``. The output is the stream ``sandq.broker.output`` describes; the
result comes from the result backend once the stream's end entry says it is stored. Should the
end entry never come (a worker that died between the two), the result's arrival ends the stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis

from sandq.broker.output import Cursor, OutputChunk
from sandq.client.batch import Handle
from sandq.client.waiting import ResultTimeout
from sandq.contract import ExecutionResult

POLL_SECONDS = 2.0
"""Longest block on the stream before checking whether the result came without an end entry."""


def follow(
    client: redis.Redis, key: str, handle: Handle, execution_id: str, timeout: float | None
) -> Iterator[OutputChunk | ExecutionResult]:
    """The chunks of stream ``key`` as they are written, then ``handle``'s result.

    Raises ``ResultTimeout`` if the execution has not ended within ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    cursor = Cursor()
    while not cursor.ended:
        left = POLL_SECONDS if deadline is None else min(deadline - time.monotonic(), POLL_SECONDS)
        if left <= 0:
            raise ResultTimeout(execution_id, timeout)
        reply = client.xread({key: cursor.after}, block=max(int(left * 1000), 1))
        chunks = cursor.take(Cursor.entries(reply))
        yield from chunks
        if not chunks and not cursor.ended and handle.ready():
            yield from cursor.take(client.xrange(key, min=f"({cursor.after}"))
            break
    yield handle.result(None if deadline is None else max(deadline - time.monotonic(), 0.001))
