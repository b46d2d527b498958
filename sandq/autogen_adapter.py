"""AutoGen integration: ``QueuedCodeExecutor``, a ``CodeExecutor`` that runs code blocks through sandq.

Importing this module needs ``autogen-core`` (``pip install sandq[autogen]``, which brings
``autogen-agentchat`` too); ``import sandq`` does not. Give it to
``autogen_agentchat.agents.CodeExecutorAgent(name, code_executor=QueuedCodeExecutor(...))``.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Unpack

from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock, CodeExecutor, CodeResult
from typing_extensions import override

from sandq.agent_results import Outcome, SandboxOptions, SandboxRunner, cancelled, refused
from sandq.contract import Status

PYTHON_LANGUAGES = frozenset({"python", "py", "python3"})
TIMEOUT_EXIT_CODE = 124
"""The exit code AutoGen's own executors report for a timeout."""


@dataclass
class QueuedCodeResult(CodeResult):
    """A ``CodeResult`` that also names the sandq executions and the output files saved locally."""

    execution_ids: list[str] = field(default_factory=list)
    output_files: list[Path] = field(default_factory=list)


class QueuedCodeExecutor(CodeExecutor):
    """An AutoGen code executor that runs each Python block in its own sandq gVisor sandbox.

    Takes the ``SandboxOptions`` as keyword arguments (request fields default to the contract's)
    and ``output_dir``, where the files a block writes to ``/tmp/outputs/`` are saved, under the
    execution's id (by default a new temporary directory, left in place). The blocks run one
    after the other, each in a fresh sandbox, and the first that does not succeed ends the
    run, as in AutoGen's own executors. The output gives, per block, the status and exit code,
    then stdout and stderr apart, and where the output files went. Cancelling the
    ``CancellationToken`` cancels the running sandq execution. It never raises: a full queue,
    an unreachable Redis, no worker or a fault in sandq becomes an output saying what happened
    and what to do, with a non-zero exit code.
    """

    def __init__(self, *, output_dir: Path | str | None = None, **options: Unpack[SandboxOptions]) -> None:
        """An executor on the queue ``options`` name; see the class docstring."""
        self.runner = SandboxRunner("QueuedCodeExecutor", **options)
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="sandq-autogen-"))

    @override
    async def execute_code_blocks(
        self, code_blocks: list[CodeBlock], cancellation_token: CancellationToken
    ) -> QueuedCodeResult:
        """Run the blocks in order, stopping at the first that does not succeed."""
        result = QueuedCodeResult(exit_code=0, output="")
        texts = []
        for block in code_blocks:
            execution_id = uuid.uuid4().hex
            outcome = await self._run(block, execution_id, cancellation_token)
            result.execution_ids.append(execution_id)
            result.output_files += self._save(outcome, execution_id)
            texts.append(outcome.as_text(f"saved under {self.output_dir / execution_id}"))
            result.exit_code = _exit_code(outcome)
            if result.exit_code != 0:
                break
        result.output = "\n".join(texts)
        return result

    async def _run(self, block: CodeBlock, execution_id: str, token: CancellationToken) -> Outcome:
        if block.language.lower() not in PYTHON_LANGUAGES:
            return refused(f"sandq runs Python only, and this block is {block.language!r}")
        task = asyncio.ensure_future(self.runner.run_async(block.code, execution_id=execution_id))
        token.link_future(task)
        try:
            return await task
        except asyncio.CancelledError:
            if not token.is_cancelled():  # the caller's own task was cancelled
                raise
            return cancelled(execution_id, "its CancellationToken was cancelled")

    def _save(self, outcome: Outcome, execution_id: str) -> list[Path]:
        saved = []
        for file in outcome.files:  # names are safe relative paths: the contract checks them
            path = self.output_dir / execution_id / file.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(file.content)
            saved.append(path)
        return saved

    @override
    async def start(self) -> None:
        """Nothing to start: the queue's workers give every block a fresh sandbox."""

    @override
    async def stop(self) -> None:
        """Nothing to stop: no sandbox outlives its block. ``runner.close()`` releases the client."""

    @override
    async def restart(self) -> None:
        """Nothing to restart: no state is kept between blocks."""


def _exit_code(outcome: Outcome) -> int:
    if outcome.succeeded:
        return 0
    if outcome.status is Status.TIMED_OUT:
        return TIMEOUT_EXIT_CODE
    return outcome.exit_code or 1
