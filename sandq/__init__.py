"""sandq: run untrusted, LLM-generated code in gVisor sandboxes through a queue.

The public API. Names are imported on first use, so that importing a submodule (the contract,
the CLI, the in-sandbox runner) does not load the client and its Celery app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandq.broker.errors import QueueFull, SubmissionRefused, TenantQuotaExceeded
    from sandq.broker.output import OutputChunk
    from sandq.client import Batch, BatchProgress, Client, ExecutionHandle, ResultTimeout
    from sandq.contract import ExecutionRequest, ExecutionResult, File, Status
    from sandq.settings import Settings

_EXPORTS = {
    "Batch": "sandq.client",
    "BatchProgress": "sandq.client",
    "Client": "sandq.client",
    "ExecutionHandle": "sandq.client",
    "ResultTimeout": "sandq.client",
    "OutputChunk": "sandq.broker.output",
    "ExecutionRequest": "sandq.contract",
    "ExecutionResult": "sandq.contract",
    "File": "sandq.contract",
    "Status": "sandq.contract",
    "Settings": "sandq.settings",
    "SubmissionRefused": "sandq.broker.errors",
    "QueueFull": "sandq.broker.errors",
    "TenantQuotaExceeded": "sandq.broker.errors",
}

__all__ = [
    "Batch",
    "BatchProgress",
    "Client",
    "ExecutionHandle",
    "ExecutionRequest",
    "ExecutionResult",
    "File",
    "OutputChunk",
    "QueueFull",
    "ResultTimeout",
    "Settings",
    "Status",
    "SubmissionRefused",
    "TenantQuotaExceeded",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandq' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
