"""Awaiting results in async code without a thread: Celery's result channel, then a read.

Celery's Redis backend stores a result with ``SET`` and publishes it on a channel named like its
key. A ``ResultWaiter`` subscribes to that channel, on one pub/sub connection shared by all of its
waits, then reads the key (a result stored before the subscription is found there), then awaits
the message, which carries the result. While it waits it reads the key again every
``RECHECK_SECONDS``, so a message lost while the connection was down delays a result by that long
at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aioredis

from sandq.client.stored import chunked, result_of, results_in
from sandq.contract import ExecutionResult
from sandq.stopping import stop

log = logging.getLogger(__name__)

RECHECK_SECONDS = 5.0
_IDLE_CHANNEL = "sandq:result-waiter:idle"
"""Keeps the connection subscribed (and its reader reading) while nothing is awaited."""


class ResultTimeout(TimeoutError):
    """No result arrived within the wait; the execution may still finish later."""

    def __init__(self, execution_id: str, timeout: float | None) -> None:
        super().__init__(f"no result for {execution_id} within {timeout} s (is a worker running?)")
        self.execution_id = execution_id


class _Wait:
    """One wait: woken by the result published on its channel, or just to read the key again."""

    def __init__(self) -> None:
        self.woken = asyncio.Event()
        self.published: bytes | None = None

    def wake(self, published: bytes | None = None) -> None:
        self.published = published
        self.woken.set()

    def taken(self, execution_id: str, decode: Callable[[Any], Mapping[str, Any]]) -> ExecutionResult | None:
        """The result the wake-up brought, if it brought one (a retry's state is no result)."""
        published, self.published = self.published, None
        self.woken.clear()
        return None if published is None else result_of(execution_id, decode(published))


class ResultWaiter:
    """Awaits the results of executions by id; use it as an async context manager, or ``aclose`` it."""

    def __init__(
        self,
        redis_url: str,
        key_for: Callable[[str], bytes],
        decode: Callable[[Any], Mapping[str, Any]],
    ) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self._pubsub = self.redis.pubsub()
        self._key_for, self._decode = key_for, decode
        self._waiting: dict[bytes, set[_Wait]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._commands = asyncio.Lock()
        """One (un)subscription at a time: the first one connects."""

    async def __aenter__(self) -> ResultWaiter:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def stored(self, *execution_ids: str) -> dict[str, ExecutionResult]:
        """The results stored for ``execution_ids`` (those not ended are left out)."""
        found: dict[str, ExecutionResult] = {}
        for chunk in chunked(execution_ids):
            raw = await self.redis.mget([self._key_for(i) for i in chunk])
            found.update(results_in(chunk, raw, self._decode))
        return found

    async def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionResult:
        """The result of ``execution_id``; ``ResultTimeout`` if none is stored within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        key = self._key_for(execution_id)
        wait = _Wait()
        await self._subscribe(key, wait)
        try:
            result = (await self.stored(execution_id)).get(execution_id)
            while result is None:
                left = RECHECK_SECONDS if deadline is None else min(deadline - loop.time(), RECHECK_SECONDS)
                if left <= 0:
                    raise ResultTimeout(execution_id, timeout)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wait.woken.wait(), left)
                result = wait.taken(execution_id, self._decode)
                result = result or (await self.stored(execution_id)).get(execution_id)
            return result
        finally:
            await self._unsubscribe(key, wait)

    async def _subscribe(self, key: bytes, wait: _Wait) -> None:
        waiting = self._waiting.setdefault(key, set())
        waiting.add(wait)
        if len(waiting) > 1:
            return
        async with self._commands:
            if self._reader is None:
                await self._pubsub.subscribe(_IDLE_CHANNEL, key)
                self._reader = asyncio.create_task(self._read(), name="sandq-result-waiter")
            else:
                await self._pubsub.subscribe(key)

    async def _unsubscribe(self, key: bytes, wait: _Wait) -> None:
        waiting = self._waiting.get(key, set())
        waiting.discard(wait)
        if not waiting:
            self._waiting.pop(key, None)
            async with self._commands:
                with contextlib.suppress(redis.RedisError):  # a reconnection subscribes to what is left
                    await self._pubsub.unsubscribe(key)

    async def _read(self) -> None:
        """Wake the waits of each result published; after a lost connection, wake them all to read."""
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            except redis.RedisError as error:
                log.warning("result channel lost (%s); reconnecting", type(error).__name__)
                for waiting in list(self._waiting.values()):
                    for wait in waiting:
                        wait.wake()
                await asyncio.sleep(0.5)
                continue
            if message and message.get("type") == "message":
                for wait in self._waiting.get(message["channel"], ()):
                    wait.wake(message["data"])

    async def aclose(self) -> None:
        """Stop reading and close the connections."""
        if self._reader is not None:
            await stop([self._reader])
            self._reader = None
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()
