"""QueuedCodeExecutor in AutoGen's CodeExecutorAgent, model replayed: real Redis, a real worker, gVisor."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from autogen_agentchat.agents import CodeExecutorAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, CodeExecutionEvent
from autogen_core import CancellationToken
from autogen_core.models import ModelFamily, ModelInfo, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from sandq import Client, Status
from sandq.autogen_adapter import QueuedCodeExecutor
from tests.conftest import RecordingClient
from tests.integration.adapters import expected

pytestmark = pytest.mark.filterwarnings("ignore:No approval function set for CodeExecutorAgent")

RETRYING_MODEL = ModelInfo(
    vision=False, function_calling=False, json_output=True, family=ModelFamily.UNKNOWN, structured_output=True
)
"""What CodeExecutorAgent needs to ask the model whether to retry after an error."""


def python_block(code: str) -> str:
    return f"Let me run it.\n```python\n{code}\n```\n"


Stream = list[BaseAgentEvent | BaseChatMessage | TaskResult]
"""Everything an agent's run_stream yields."""


def executions(stream: Stream) -> list[str]:
    """The output of each execution in the run, as the agent put it into the model's context."""
    return [m.result.output for m in stream if isinstance(m, CodeExecutionEvent)]


def final_text(stream: Stream) -> str:
    """The agent's last message."""
    result = stream[-1]
    assert isinstance(result, TaskResult)
    return result.messages[-1].to_text()


def seen_by_model(model: ReplayChatCompletionClient) -> list[str]:
    """The user messages of the model's last request: the task, then each execution's output."""
    return [str(m.content) for m in model.create_calls[-1]["messages"] if isinstance(m, UserMessage)]


async def converse(
    executor: QueuedCodeExecutor,
    model: ReplayChatCompletionClient,
    max_retries_on_error: int = 0,
    token: CancellationToken | None = None,
) -> Stream:
    """One task through a CodeExecutorAgent that writes code with ``model`` and reflects on the result."""
    agent = CodeExecutorAgent(
        "coder",
        code_executor=executor,
        model_client=model,
        supported_languages=["python"],
        max_retries_on_error=max_retries_on_error,
    )
    return [m async for m in agent.run_stream(task="go", cancellation_token=token)]


async def test_real_output_reaches_the_model_and_files_are_saved(
    recording_client: RecordingClient, tmp_path: Path
) -> None:
    executor = QueuedCodeExecutor(client=recording_client, output_dir=tmp_path, timeout_seconds=30)
    model = ReplayChatCompletionClient([python_block(expected.OUTPUT_CODE), "The digest is computed."])
    result = await converse(executor, model)

    [options] = recording_client.options
    execution_id = options["execution_id"]
    shown = expected.success_text(f"saved under {tmp_path / execution_id}")
    assert executions(result) == [shown]
    assert seen_by_model(model) == ["go", shown]
    assert (tmp_path / execution_id / "squares.csv").read_bytes() == expected.SQUARES_CSV
    assert final_text(result) == "The digest is computed."
    [request] = recording_client.submitted
    assert (request.code.strip(), request.timeout_seconds) == (expected.OUTPUT_CODE, 30)


async def test_traceback_reaches_the_model_and_the_loop_goes_on(recording_client: RecordingClient) -> None:
    model = ReplayChatCompletionClient(
        [
            python_block(expected.FAILING_CODE),
            '{"retry": true, "reason": "fix the ValueError"}',
            python_block(expected.AFTER_FAILURE_CODE),
            "It works now.",
        ],
        model_info=RETRYING_MODEL,
    )
    result = await converse(QueuedCodeExecutor(client=recording_client), model, max_retries_on_error=1)

    failure, after = executions(result)
    assert failure.startswith("The script ran, then exited with an error (POSIX exit code: 1)\nIts output")
    expected.assert_traceback_shown(failure.split("Its output was:\n", 1)[1])
    assert after == "status: succeeded (exit code 0)\n--- stdout ---\nstill going\n"
    assert seen_by_model(model) == ["go", failure, "go", after]  # the agent repeats the task on a retry
    assert final_text(result) == "It works now."


async def test_timeout_is_reported_as_a_timeout(recording_client: RecordingClient) -> None:
    model = ReplayChatCompletionClient([python_block(expected.LOOPING_CODE), "Too slow."])
    started = time.monotonic()
    result = await converse(QueuedCodeExecutor(client=recording_client, timeout_seconds=2), model)

    [output] = executions(result)
    assert output.startswith("The script ran, then exited with an error (POSIX exit code: 124)")
    expected.assert_timed_out(output.split("Its output was:\n", 1)[1])
    assert final_text(result) == "Too slow."
    assert time.monotonic() - started < 30


async def test_no_worker_ends_in_a_clear_message_within_a_bounded_wait(idle_client: Client) -> None:
    model = ReplayChatCompletionClient([python_block("print(1)"), "No workers."])
    started = time.monotonic()
    result = await converse(QueuedCodeExecutor(client=idle_client, **expected.NO_WORKER_OPTIONS), model)

    [output] = executions(result)
    expected.assert_no_worker(output.split("Its output was:\n", 1)[1])
    assert final_text(result) == "No workers."
    assert time.monotonic() - started < 10


async def test_cancelling_the_token_cancels_the_sandq_execution(recording_client: RecordingClient) -> None:
    model = ReplayChatCompletionClient([python_block("import time\ntime.sleep(120)"), "Stopped."])
    token = CancellationToken()
    run = asyncio.create_task(converse(QueuedCodeExecutor(client=recording_client), model, token=token))
    while not recording_client.options:  # the code is queued
        await asyncio.sleep(0.05)
    execution_id = recording_client.options[0]["execution_id"]
    await asyncio.sleep(3)  # long enough for the worker to start the sandbox
    started = time.monotonic()
    token.cancel()

    sandq_result = await asyncio.to_thread(recording_client.wait, execution_id, 30)
    assert sandq_result.status is Status.CANCELLED
    assert time.monotonic() - started < 15
    result = await run
    [output] = executions(result)
    assert output.endswith(
        "status: cancelled\nsandq: the execution was cancelled (its CancellationToken was cancelled).\n"
    )
    assert final_text(result) == "Stopped."
