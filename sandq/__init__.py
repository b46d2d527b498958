"""sandq: run untrusted, LLM-generated code in gVisor sandboxes through a queue."""

from sandq.broker.client import Client, ExecutionHandle, ResultTimeout
from sandq.contract import ExecutionRequest, ExecutionResult, File, Status
from sandq.settings import Settings

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
