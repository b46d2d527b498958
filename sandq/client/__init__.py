"""The client side of sandq: submit executions, await results, batches, and what the queues hold.

Called by agents (directly or through an adapter) and by the CLI. Layers below: ``sandq.broker``
(admission, routing, the Celery app) and the contract.
"""

from __future__ import annotations

from sandq.client.batch import Batch, BatchProgress
from sandq.client.client import Client, ExecutionHandle, ResultTimeout

__all__ = ["Batch", "BatchProgress", "Client", "ExecutionHandle", "ResultTimeout"]
