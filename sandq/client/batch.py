"""Many executions submitted together: progress by status, results as they finish, cancel.

Called through ``Client.submit_batch``. A ``Batch`` uses its client only through
``Submitter`` (submit, submit_indexed, ready_results, cancel), so this module does not
import the client.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sandq.broker.errors import SubmissionRefused
from sandq.broker.routing import Priority
from sandq.contract import ExecutionRequest, ExecutionResult, Status
from sandq.settings import Settings

RequestLike = ExecutionRequest | Mapping[str, Any]


@dataclass(frozen=True)
class Sent:
    """What ``Client.submit_indexed`` did with a chunk of a batch."""

    consumed: int
    """How many items, from the first, were handled (enqueued, already queued, or rejected)."""
    done: dict[str, ExecutionResult]
    """Results known at once (rejected requests)."""
    retry_after: float | None = None
    """Set when a cap stopped the chunk early: seconds to wait before the rest."""


@dataclass(frozen=True)
class BatchProgress:
    """How far a batch has come: ``done`` of ``total``, finished ones counted by status."""

    total: int
    done: int
    unsubmitted: int
    by_status: dict[Status, int] = field(default_factory=dict)


class Handle(Protocol):
    """What a batch reads of a submitted execution."""

    def ready(self) -> bool:
        """True once the result is available."""

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """The result."""


class Submitter(Protocol):
    """What a batch needs of its client."""

    settings: Settings

    def submit(
        self, request: RequestLike, *, execution_id: str | None = None, priority: Priority = ...
    ) -> Handle:
        """Submit one request."""

    def submit_indexed(self, items: Sequence[tuple[str, RequestLike]], *, priority: Priority = ...) -> Sent:
        """Submit many requests as batch messages."""

    def ready_results(self, execution_ids: Sequence[str]) -> dict[str, ExecutionResult]:
        """The results already stored."""

    def cancel(self, *execution_ids: str) -> None:
        """Cancel executions."""


class Batch:
    """Executions submitted as one batch.

    Requests beyond the caps on queued executions wait in the batch and are submitted as
    room frees up, whenever ``progress``, ``as_completed`` or ``pump`` is called. With
    ``indexed=True`` they travel ``indexed_batch_size`` to a message and a Kubernetes worker
    runs each message as Indexed Jobs; results still arrive one per id.
    """

    def __init__(
        self,
        client: Submitter,
        requests: Iterable[RequestLike],
        *,
        ids: Sequence[str] | None = None,
        priority: Priority = "batch",
        indexed: bool = False,
    ) -> None:
        self.client = client
        self.priority = priority
        self.indexed = indexed
        items = list(requests)
        self.ids = list(ids) if ids is not None else [uuid.uuid4().hex for _ in items]
        if len(self.ids) != len(items):
            raise ValueError(f"{len(self.ids)} ids for {len(items)} requests")
        self._unsent = deque(zip(self.ids, items, strict=True))
        self._submitted: list[str] = []
        self._results: dict[str, ExecutionResult] = {}
        self._not_before = 0.0
        self.pump()

    @property
    def total(self) -> int:
        """How many executions the batch holds."""
        return len(self.ids)

    def pump(self) -> None:
        """Submit waiting requests until a cap refuses one (then wait its ``retry_after``)."""
        if time.monotonic() < self._not_before:
            return
        while self._unsent:
            if self.indexed:
                if not self._pump_chunk():
                    return
                continue
            execution_id, request = self._unsent[0]
            try:
                handle = self.client.submit(request, execution_id=execution_id, priority=self.priority)
            except SubmissionRefused as refused:
                self._not_before = time.monotonic() + refused.retry_after
                return
            self._unsent.popleft()
            self._submitted.append(execution_id)
            if handle.ready():
                self._results[execution_id] = handle.result()

    def _pump_chunk(self) -> bool:
        """Submit one chunk for Indexed Jobs; False if a cap stopped it."""
        size = min(len(self._unsent), self.client.settings.indexed_batch_size)
        sent = self.client.submit_indexed([self._unsent[i] for i in range(size)], priority=self.priority)
        for _ in range(sent.consumed):
            self._submitted.append(self._unsent.popleft()[0])
        self._results.update(sent.done)
        if sent.retry_after is None:
            return True
        self._not_before = time.monotonic() + sent.retry_after
        return False

    def poll(self) -> list[ExecutionResult]:
        """Submit what fits, and return the results that finished since the last poll."""
        self.pump()
        pending = [i for i in self._submitted if i not in self._results]
        new = self.client.ready_results(pending)
        self._results.update(new)
        return list(new.values())

    def progress(self) -> BatchProgress:
        """Where the batch stands now."""
        self.poll()
        by_status = Counter(r.status for r in self._results.values())
        return BatchProgress(self.total, len(self._results), len(self._unsent), dict(by_status))

    def as_completed(self, timeout: float | None = None, interval: float = 0.2) -> Iterator[ExecutionResult]:
        """Yield each result once, as it finishes; raise ``TimeoutError`` after ``timeout`` seconds.

        Results that finished before the call (or that ``progress`` saw) are yielded first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        yielded: set[str] = set()
        while True:
            self.poll()
            fresh = [(i, r) for i, r in list(self._results.items()) if i not in yielded]
            for execution_id, result in fresh:
                yielded.add(execution_id)
                yield result
            if len(yielded) >= self.total:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.total - len(self._results)} executions still unfinished")
            if not fresh:
                time.sleep(interval)

    def results(self, timeout: float | None = None) -> list[ExecutionResult]:
        """Every result, in the order of the requests, once all have finished."""
        for _ in self.as_completed(timeout):
            pass
        return [self._results[i] for i in self.ids]

    def cancel(self) -> None:
        """Cancel every unfinished execution; requests not yet submitted never will be."""
        while self._unsent:
            execution_id, _ = self._unsent.popleft()
            cancelled = ExecutionResult.cancelled(execution_id, "cancelled before submission")
            self._results[execution_id] = cancelled
        self.client.cancel(*(i for i in self._submitted if i not in self._results))
