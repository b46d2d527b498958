"""pydantic-ai integration: ``QueuedPythonTool``, a ``Tool`` that runs Python through sandq.

Importing this module needs ``pydantic-ai-slim`` (``pip install sandq[pydantic-ai]``); ``import
sandq`` does not. Register it with ``Agent(model, tools=[QueuedPythonTool(...)])``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Unpack

from pydantic_ai import BinaryContent, Tool

from sandq.agent_results import TOOL_DESCRIPTION, TOOL_NAME, Outcome, SandboxOptions, SandboxRunner

ToolResult = str | list[str | BinaryContent]


class QueuedPythonTool(Tool[Any]):
    """A pydantic-ai tool that runs the model's Python in a sandq gVisor sandbox, through the queue.

    Takes the ``SandboxOptions`` as keyword arguments (request fields default to the contract's),
    plus the tool's ``name`` and ``description``. Its ``timeout`` is the longest a run can take
    through sandq (the request's time limit, the queue wait and Redis reconnects). The tool
    result is a text with the status and exit code, then stdout and stderr apart; output files
    (those the code writes to ``/tmp/outputs/``) follow it in the same result as
    ``BinaryContent``, named by their ``identifier``. It never raises: a full queue, an
    unreachable Redis, no worker or a fault in sandq becomes a text saying what happened and
    what to do.
    """

    files_went: ClassVar[str] = "attached after this text"

    def __init__(
        self, *, name: str = TOOL_NAME, description: str = TOOL_DESCRIPTION, **options: Unpack[SandboxOptions]
    ) -> None:
        """A tool on the queue ``options`` name; see the class docstring."""
        self.runner = SandboxRunner("QueuedPythonTool", **options)
        super().__init__(
            self.run_python,
            takes_ctx=False,
            name=name,
            description=description,
            timeout=self.runner.longest_seconds,
        )

    async def run_python(self, code: str) -> ToolResult:
        """Run a program.

        Args:
            code: The Python program to run, complete with its imports.
        """
        return _tool_result(await self.runner.run_async(code))


def _tool_result(outcome: Outcome) -> ToolResult:
    text = outcome.as_text(QueuedPythonTool.files_went)
    if not outcome.files:
        return text
    files = [BinaryContent(f.content, media_type=f.mime_type, identifier=f.name) for f in outcome.files]
    return [text, *files]
