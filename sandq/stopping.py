"""Stopping asyncio tasks for good: cancel, then cancel again while one goes on.

A cancel can be lost: a ``redis.asyncio`` command reads under ``asyncio.timeout`` (its
``socket_timeout``, 5 s by default), and on Python 3.11 a cancel that lands there is often
dropped. The task goes on as if nothing happened, ``Task.cancelling()`` still 1, and
``task.cancel(); await task`` waits for ever (a loop of GETs lost 228 of 300 cancels; none with
``socket_timeout=None``).

Called by the gateway (its background loops) and ``client.waiting.ResultWaiter`` (its reader).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_SECONDS = 0.1
"""How long a cancelled task may take to end before it is cancelled again."""


async def stop(tasks: Iterable[asyncio.Task[Any]], tries: int = 50) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait until they end, cancelling those still running every
    ``RECANCEL_SECONDS``, at most ``tries`` times; return those that would not end."""
    pending = set(tasks)
    for _ in range(tries):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
    return pending
