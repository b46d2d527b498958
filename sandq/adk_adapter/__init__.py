"""Google ADK integration: ``QueuedCodeExecutor``, a drop-in for ``GkeCodeExecutor``.

Importing this package needs ``google-adk`` (``pip install sandq[adk]``); ``import sandq`` does not.
"""

from sandq.adk_adapter.executor import QueuedCodeExecutor
from sandq.adk_adapter.scripted import ScriptedLlm, tool_outputs

__all__ = ["QueuedCodeExecutor", "ScriptedLlm", "tool_outputs"]
