"""The client API: submit requests, await results, in sync or async code."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from sandq.broker.admission import Admission, Admitted
from sandq.broker.app import EXECUTE_TASK, create_celery
from sandq.broker.batch import Batch
from sandq.broker.keys import Keys
from sandq.broker.routing import PRIORITY_VALUES, Priority, queue_for
from sandq.contract import ExecutionRequest, ExecutionResult, Status, Submission
from sandq.settings import Settings
from sandq.validation import RequestRejected, validate_request

RequestLike = ExecutionRequest | Mapping[str, Any]


class ResultTimeout(TimeoutError):
    """No result arrived within the wait; the execution may still finish later."""

    def __init__(self, execution_id: str, timeout: float | None) -> None:
        super().__init__(f"no result for {execution_id} within {timeout} s (is a worker running?)")
        self.execution_id = execution_id


class ExecutionHandle:
    """A submitted execution: its ``id`` and a way to wait for its result."""

    def __init__(self, client: Client, execution_id: str, done: ExecutionResult | None = None) -> None:
        self.client = client
        self.id = execution_id
        self._done = done

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Block until the result arrives; raise ``ResultTimeout`` after ``timeout`` seconds."""
        if self._done is None:
            self._done = self.client.wait(self.id, timeout)
        return self._done

    async def result_async(self, timeout: float | None = None) -> ExecutionResult:
        """Await the result without blocking the event loop."""
        return await asyncio.to_thread(self.result, timeout)

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
        self, request: RequestLike, *, execution_id: str | None = None, priority: Priority = "interactive"
    ) -> ExecutionHandle:
        """Validate, admit and enqueue one request. An invalid one is answered ``rejected`` at once.

        Raises ``SubmissionRefused`` (``QueueFull``, ``TenantQuotaExceeded``), having enqueued
        nothing, at a cap on queued executions. Submitting an id that is still queued or
        running enqueues nothing more. ``interactive`` work goes ahead of ``batch`` work.
        """
        execution_id = execution_id or uuid.uuid4().hex
        enqueued_at = datetime.now(UTC)
        try:
            valid = validate_request(request, self.settings)
        except RequestRejected as error:
            done = ExecutionResult(
                id=execution_id,
                status=Status.REJECTED,
                error=str(error),
                attempts=0,
                enqueued_at=enqueued_at,
                finished_at=enqueued_at,
            )
            return ExecutionHandle(self, execution_id, done)
        submission = Submission(
            id=execution_id, enqueued_at=enqueued_at, request=valid.model_dump(mode="json")
        )
        admitted = self.admission.admit(execution_id, valid.tenant)
        if admitted is Admitted.ALREADY:
            return ExecutionHandle(self, execution_id)
        queue = queue_for(self.settings, valid.tenant)
        if admitted is Admitted.NEW_TENANT:  # running workers consume the new queue at once
            self.app.control.add_consumer(queue, reply=False)
        try:
            self.app.send_task(
                EXECUTE_TASK,
                args=[submission.model_dump(mode="json")],
                task_id=execution_id,
                queue=queue,
                priority=PRIORITY_VALUES[priority],
            )
        except BaseException:
            self.admission.withdraw(execution_id, valid.tenant)
            raise
        return ExecutionHandle(self, execution_id)

    def submit_batch(
        self,
        requests: Iterable[RequestLike],
        *,
        ids: Sequence[str] | None = None,
        priority: Priority = "batch",
    ) -> Batch:
        """Submit many requests as one ``Batch``; those beyond the caps wait in it for room."""
        return Batch(self, requests, ids=ids, priority=priority)

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
        return ExecutionResult(
            id=execution_id,
            status=Status.INFRASTRUCTURE_ERROR,
            error=f"the worker task failed: {value!r}",
        )

    def run(self, request: RequestLike, timeout: float | None = None) -> ExecutionResult:
        """Submit and wait for the result."""
        return self.submit(request).result(timeout)

    async def run_async(self, request: RequestLike, timeout: float | None = None) -> ExecutionResult:
        """Submit and await the result without blocking the event loop."""
        handle = await asyncio.to_thread(self.submit, request)
        return await handle.result_async(timeout)

    def close(self) -> None:
        """Release broker and backend connections."""
        self.redis.close()
        self.app.close()
