"""The client API: submit requests, await results, in sync or async code.

Called by agents, the CLI and the adapters. A submission is validated here, admitted by
``sandq.broker.admission`` (caps on queued executions), and sent to its tenant's queue; the
result comes back through the result backend under the execution's id.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from sandq.broker.admission import Admission, Admitted
from sandq.broker.app import EXECUTE_INDEXED_TASK, EXECUTE_TASK, create_celery
from sandq.broker.errors import SubmissionRefused
from sandq.broker.keys import Keys
from sandq.broker.output import OutputChunk
from sandq.broker.routing import PRIORITY_VALUES, TENANT_QUEUE_COMMAND, Priority, queue_for
from sandq.client.batch import Batch, RequestLike, Sent
from sandq.client.stored import chunked, results_in, task_failed
from sandq.client.streaming import follow
from sandq.client.waiting import ResultTimeout, ResultWaiter
from sandq.contract import ExecutionResult, Submission
from sandq.settings import Settings
from sandq.validation import RequestRejected, validate_request

__all__ = ["Client", "ExecutionHandle", "OnOutput", "ResultTimeout"]

log = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECT_SECONDS = 30.0
"""How long ``submit`` keeps retrying while Redis is unreachable (e.g. restarting)."""
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError, ConnectionError)


def _reconnecting(call: Callable[[], T]) -> tuple[T, bool]:
    """``call()``, retried with backoff for ``RECONNECT_SECONDS`` while Redis is unreachable.

    Returns its value and whether it was retried (an earlier try may have taken effect).
    """
    deadline = time.monotonic() + RECONNECT_SECONDS
    delay, retried = 0.1, False
    while True:
        try:
            return call(), retried
        except _CONNECTION_ERRORS as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unreachable (%s); retrying in %.1f s", error, delay)
        time.sleep(delay)
        delay, retried = min(2 * delay, 2.0), True


def _rejected(execution_id: str, error: RequestRejected, at: datetime) -> ExecutionResult:
    """The result of a request refused by validation: nothing ran."""
    return ExecutionResult.rejected(execution_id, str(error), enqueued_at=at, finished_at=at)


OnOutput = Callable[[OutputChunk], None]
"""Called with each chunk of stdout or stderr as the code writes it (``Client.run``)."""


class ExecutionHandle:
    """A submitted execution: its ``id`` and a way to wait for its result (or follow its output)."""

    def __init__(
        self,
        client: Client,
        execution_id: str,
        done: ExecutionResult | None = None,
        *,
        streaming: bool = False,
    ) -> None:
        self.client = client
        self.id = execution_id
        self.streaming = streaming
        """Whether the output is published while the code runs (submitted with ``stream=True``)."""
        self._done = done

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Block until the result arrives; raise ``ResultTimeout`` after ``timeout`` seconds."""
        if self._done is None:
            self._done = self.client.wait(self.id, timeout)
        return self._done

    async def result_async(self, timeout: float | None = None) -> ExecutionResult:
        """Await the result without blocking the event loop (and without a thread).

        Each call opens one pub/sub connection for its wait; to await many executions at once,
        share one ``Client.result_waiter()``.
        """
        if self._done is None:
            async with self.client.result_waiter() as waiter:
                self._done = await waiter.wait(self.id, timeout)
        return self._done

    def stream(self, timeout: float | None = None) -> Iterator[OutputChunk | ExecutionResult]:
        """Yield the output as the code writes it (``OutputChunk``: stream, data), then the result.

        Needs the execution submitted with ``stream=True``. Raises ``ResultTimeout`` if it has
        not ended within ``timeout`` seconds.
        """
        if not self.streaming:
            raise ValueError("this execution was not submitted with stream=True: its output is not published")
        if self._done is not None:
            yield self._done
            return
        key = Keys(self.client.settings.queue).output(self.id)
        for item in follow(self.client.redis, key, self, self.id, timeout):
            if isinstance(item, ExecutionResult):
                self._done = item
            yield item

    def ready(self) -> bool:
        """True once the result is available."""
        return self._done is not None or bool(self.client.async_result(self.id).ready())

    def cancel(self) -> None:
        """Cancel this execution (see ``Client.cancel``)."""
        self.client.cancel(self.id)


class Client:
    """Submits executions to the queue and collects their results."""

    def __init__(self, settings: Settings | None = None, app: Celery | None = None) -> None:
        self.settings = settings or Settings()
        self.app = app or create_celery(self.settings)
        self.redis = redis.Redis.from_url(self.settings.redis_url)
        self.admission = Admission(self.settings, self.redis)

    @classmethod
    def from_env(cls) -> Client:
        """A client configured from ``SANDQ_`` environment variables."""
        return cls(Settings())

    def submit(
        self,
        request: RequestLike,
        *,
        execution_id: str | None = None,
        priority: Priority = "interactive",
        stream: bool = False,
    ) -> ExecutionHandle:
        """Validate, admit and enqueue one request. An invalid one is answered ``rejected`` at once.

        Raises ``SubmissionRefused`` (``QueueFull``, ``TenantQuotaExceeded``), having enqueued
        nothing, at a cap on queued executions. Submitting an id that is still queued or
        running enqueues nothing more. ``interactive`` work goes ahead of ``batch`` work.
        ``stream=True`` has the worker publish the output while the code runs
        (``ExecutionHandle.stream``); it sets the request's ``stream_output``.
        """
        execution_id = execution_id or uuid.uuid4().hex
        enqueued_at = datetime.now(UTC)
        try:
            valid = validate_request(request, self.settings)
        except RequestRejected as error:
            rejected = _rejected(execution_id, error, enqueued_at)
            return ExecutionHandle(self, execution_id, rejected, streaming=stream)
        if stream and not valid.stream_output:
            valid = valid.model_copy(update={"stream_output": True})
        submission = Submission(
            id=execution_id, enqueued_at=enqueued_at, request=valid.wire()
        )
        admitted, retried = _reconnecting(lambda: self.admission.admit(execution_id, valid.tenant))
        if admitted is Admitted.ALREADY and not retried:  # after a lost answer, it may be our own
            return ExecutionHandle(self, execution_id, streaming=valid.stream_output)
        queue = queue_for(self.settings, valid.tenant)
        if admitted is Admitted.NEW_TENANT:
            self._announce_tenant(valid.tenant)
        try:
            _reconnecting(
                lambda: self.app.send_task(
                    EXECUTE_TASK,
                    args=[submission.model_dump(mode="json")],
                    task_id=execution_id,
                    queue=queue,
                    priority=PRIORITY_VALUES[priority],
                )
            )
        except BaseException:
            self.admission.withdraw(execution_id, valid.tenant)
            raise
        return ExecutionHandle(self, execution_id, streaming=valid.stream_output)

    def _announce_tenant(self, tenant: str) -> None:
        """Have the workers of this base queue (only) consume a new tenant's queue at once."""
        self.app.control.broadcast(
            TENANT_QUEUE_COMMAND, arguments={"base": self.settings.queue, "tenant": tenant}, reply=False
        )

    def submit_indexed(
        self, items: Sequence[tuple[str, RequestLike]], *, priority: Priority = "batch"
    ) -> Sent:
        """Validate, admit and enqueue ``(id, request)`` items as one message per tenant.

        A Kubernetes worker runs such a message as Indexed Jobs (one Job for many snippets) and
        stores one result per id; any other worker runs each item as a single execution. Stops
        at the first cap on queued executions (``Sent.retry_after``), enqueuing what it admitted.
        """
        enqueued_at = datetime.now(UTC)
        done: dict[str, ExecutionResult] = {}
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        consumed = 0
        retry_after: float | None = None
        for execution_id, request in items:
            try:
                valid = validate_request(request, self.settings)
            except RequestRejected as error:
                done[execution_id] = _rejected(execution_id, error, enqueued_at)
                consumed += 1
                continue
            try:
                admitted = self.admission.admit(execution_id, valid.tenant)
            except SubmissionRefused as refused:
                retry_after = refused.retry_after
                break
            consumed += 1
            if admitted is Admitted.ALREADY:
                continue
            if admitted is Admitted.NEW_TENANT:
                self._announce_tenant(valid.tenant)
            submission = Submission(
                id=execution_id, enqueued_at=enqueued_at, request=valid.wire()
            )
            by_tenant.setdefault(valid.tenant, []).append(submission.model_dump(mode="json"))
        for tenant, payloads in by_tenant.items():
            try:
                self.app.send_task(
                    EXECUTE_INDEXED_TASK, args=[payloads], queue=queue_for(self.settings, tenant),
                    priority=PRIORITY_VALUES[priority],
                )
            except BaseException:
                for payload in payloads:
                    self.admission.withdraw(payload["id"], tenant)
                raise
        return Sent(consumed, done, retry_after)

    def submit_batch(
        self,
        requests: Iterable[RequestLike],
        *,
        ids: Sequence[str] | None = None,
        priority: Priority = "batch",
        indexed: bool = False,
    ) -> Batch:
        """Submit many requests as one ``Batch``; those beyond the caps wait in it for room.

        ``indexed=True``: Kubernetes workers run them as Indexed Jobs (see ``submit_indexed``).
        """
        return Batch(self, requests, ids=ids, priority=priority, indexed=indexed)

    def cancel(self, *execution_ids: str) -> None:
        """Cancel executions: a queued one never starts, a running one has its sandbox killed.

        Each ends with status ``cancelled`` (unless it had finished already).
        """
        keys = Keys(self.settings.queue)
        pipe = self.redis.pipeline(transaction=False)
        for execution_id in execution_ids:
            pipe.set(keys.cancel_marker(execution_id), 1, ex=self.settings.result_ttl_seconds)
            pipe.publish(keys.cancel_channel, execution_id)
        pipe.execute()

    def async_result(self, execution_id: str) -> AsyncResult[Any]:
        """Celery's view of one execution."""
        return AsyncResult(execution_id, app=self.app)

    def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionResult:
        """The result of ``execution_id``, waiting up to ``timeout`` seconds."""
        pending = self.async_result(execution_id)
        try:
            value = pending.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
        except CeleryTimeoutError:
            raise ResultTimeout(execution_id, timeout) from None
        if isinstance(value, dict):
            return ExecutionResult.model_validate(value)
        return task_failed(execution_id, value)

    def ready_results(self, execution_ids: Sequence[str]) -> dict[str, ExecutionResult]:
        """The results already stored for ``execution_ids`` (those still running are left out)."""
        backend: Any = self.app.backend
        found: dict[str, ExecutionResult] = {}
        for chunk in chunked(execution_ids):
            raw = backend.mget([backend.get_key_for_task(i) for i in chunk])
            found.update(results_in(chunk, raw, backend.decode_result))
        return found

    def result_waiter(self) -> ResultWaiter:
        """An awaiter of results for async code, sharing one connection among its waits (``aclose`` it)."""
        backend: Any = self.app.backend
        return ResultWaiter(self.settings.redis_url, backend.get_key_for_task, backend.decode_result)

    def run(
        self, request: RequestLike, timeout: float | None = None, on_output: OnOutput | None = None
    ) -> ExecutionResult:
        """Submit and wait for the result; ``on_output(chunk)`` receives the output as it is written."""
        if on_output is None:
            return self.submit(request).result(timeout)
        result = None
        for item in self.submit(request, stream=True).stream(timeout):
            if isinstance(item, ExecutionResult):
                result = item
            else:
                on_output(item)
        assert result is not None, "a stream ends with its result"
        return result

    async def run_async(self, request: RequestLike, timeout: float | None = None) -> ExecutionResult:
        """Submit and await the result without blocking the event loop."""
        handle = await asyncio.to_thread(self.submit, request)
        return await handle.result_async(timeout)

    def close(self) -> None:
        """Release broker and backend connections."""
        self.redis.close()
        self.app.close()
