"""Many executions submitted together: progress by status, results as they finish, cancel."""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandq.broker.errors import SubmissionRefused
from sandq.broker.routing import Priority
from sandq.contract import ExecutionRequest, ExecutionResult, Status

if TYPE_CHECKING:
    from sandq.broker.client import Client

_CHUNK = 500


@dataclass(frozen=True)
class BatchProgress:
    """How far a batch has come: ``done`` of ``total``, finished ones counted by status."""

    total: int
    done: int
    unsubmitted: int
    by_status: dict[Status, int] = field(default_factory=dict)


def ready_results(client: Client, execution_ids: Sequence[str]) -> dict[str, ExecutionResult]:
    """The results already stored for ``execution_ids`` (those still running are left out)."""
    backend: Any = client.app.backend
    found: dict[str, ExecutionResult] = {}
    for start in range(0, len(execution_ids), _CHUNK):
        chunk = execution_ids[start : start + _CHUNK]
        raw = backend.mget([backend.get_key_for_task(i) for i in chunk])
        for execution_id, value in zip(chunk, raw, strict=True):
            if value is None:
                continue
            meta: dict[str, Any] = backend.decode_result(value)
            if meta.get("status") == "SUCCESS":
                found[execution_id] = ExecutionResult.model_validate(meta["result"])
            elif meta.get("status") == "FAILURE":
                found[execution_id] = ExecutionResult(
                    id=execution_id,
                    status=Status.INFRASTRUCTURE_ERROR,
                    error=f"the worker task failed: {meta.get('result')!r}",
                )
    return found


class Batch:
    """Executions submitted as one batch.

    Requests beyond the caps on queued executions wait in the batch and are submitted as
    room frees up, whenever ``progress``, ``as_completed`` or ``pump`` is called.
    """

    def __init__(
        self,
        client: Client,
        requests: Iterable[ExecutionRequest | Mapping[str, Any]],
        *,
        ids: Sequence[str] | None = None,
        priority: Priority = "batch",
    ) -> None:
        self.client = client
        self.priority = priority
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

    def poll(self) -> list[ExecutionResult]:
        """Submit what fits, and return the results that finished since the last poll."""
        self.pump()
        pending = [i for i in self._submitted if i not in self._results]
        new = ready_results(self.client, pending)
        self._results.update(new)
        return list(new.values())

    def progress(self) -> BatchProgress:
        """Where the batch stands now."""
        self.poll()
        by_status = Counter(r.status for r in self._results.values())
        return BatchProgress(self.total, len(self._results), len(self._unsent), dict(by_status))

    def as_completed(self, timeout: float | None = None, interval: float = 0.2) -> Iterator[ExecutionResult]:
        """Yield each result as it finishes; raise ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        yield from list(self._results.values())
        while len(self._results) < self.total:
            new = self.poll()
            yield from new
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.total - len(self._results)} executions still unfinished")
            if not new:
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
            self._results[execution_id] = ExecutionResult(
                id=execution_id, status=Status.CANCELLED, attempts=0, error="cancelled before submission"
            )
        self.client.cancel(*(i for i in self._submitted if i not in self._results))
