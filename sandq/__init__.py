"""sandq: run untrusted, LLM-generated code in gVisor sandboxes through a queue.

The public API. Names are imported on first use, so that importing a submodule (the contract,
the CLI, the in-sandbox runner) does not load the client and its Celery app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandq.broker.client import Client, ExecutionHandle, ResultTimeout
    from sandq.contract import ExecutionRequest, ExecutionResult, File, Status
    from sandq.settings import Settings

_EXPORTS = {
    "Client": "sandq.broker.client",
    "ExecutionHandle": "sandq.broker.client",
    "ResultTimeout": "sandq.broker.client",
    "ExecutionRequest": "sandq.contract",
    "ExecutionResult": "sandq.contract",
    "File": "sandq.contract",
    "Status": "sandq.contract",
    "Settings": "sandq.settings",
}

__all__ = [
    "Client",
    "ExecutionHandle",
    "ExecutionRequest",
    "ExecutionResult",
    "File",
    "ResultTimeout",
    "Settings",
    "Status",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandq' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
