"""Results as the result backend stores them: Celery's document for a task id, read as a result."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sandq.contract import ExecutionResult


def task_failed(execution_id: str, error: object) -> ExecutionResult:
    """The result of an execution whose worker task raised instead of storing a result."""
    return ExecutionResult.infrastructure_error(execution_id, f"the worker task failed: {error!r}")


def result_of(execution_id: str, meta: Mapping[str, Any]) -> ExecutionResult | None:
    """The result in Celery's stored document ``meta``, or None if the task has not finished."""
    if meta.get("status") == "SUCCESS":
        return ExecutionResult.model_validate(meta["result"])
    if meta.get("status") == "FAILURE":
        return task_failed(execution_id, meta.get("result"))
    return None


MGET_CHUNK = 500
"""Most result keys read in one ``MGET``."""


def chunked(execution_ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """``execution_ids`` in slices of ``MGET_CHUNK``."""
    for start in range(0, len(execution_ids), MGET_CHUNK):
        yield execution_ids[start : start + MGET_CHUNK]


def results_in(
    execution_ids: Sequence[str], raw: Sequence[Any], decode: Callable[[Any], Mapping[str, Any]]
) -> dict[str, ExecutionResult]:
    """The results among ``raw`` (the stored values of ``execution_ids``, None where absent)."""
    found: dict[str, ExecutionResult] = {}
    for execution_id, value in zip(execution_ids, raw, strict=True):
        result = None if value is None else result_of(execution_id, decode(value))
        if result is not None:
            found[execution_id] = result
    return found
