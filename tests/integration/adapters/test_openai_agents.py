"""QueuedPythonTool through the OpenAI Agents SDK's Runner: real Redis, a real worker, gVisor."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from agents import Agent, RunConfig, Runner, RunResult, TResponseInputItem
from openai.types.responses import ResponseFunctionToolCall

from sandq import Client
from sandq.openai_agents_adapter import QueuedPythonTool, ScriptedModel, tool_call, tool_outputs
from tests.conftest import RecordingClient
from tests.integration.adapters import expected


def script(*codes: str) -> Callable[[list[TResponseInputItem]], str | ResponseFunctionToolCall]:
    """Run ``codes`` one per turn, then answer with the number of tool results seen."""

    def respond(items: list[TResponseInputItem]) -> str | ResponseFunctionToolCall:
        seen = len(tool_outputs(items))
        return tool_call(codes[seen], f"call-{seen}") if seen < len(codes) else f"Done after {seen} runs."

    return respond


def text_of(output: list[dict[str, Any]]) -> str:
    """The text part of a tool result the model was given."""
    [text] = [part["text"] for part in output if part["type"] == "input_text"]
    return str(text)


async def converse(tool: QueuedPythonTool, *codes: str) -> tuple[ScriptedModel, RunResult]:
    """One user message through the Runner's loop."""
    model = ScriptedModel(script(*codes))
    agent = Agent(name="analyst", instructions="Use run_python.", model=model, tools=[tool])
    result = await Runner.run(agent, "go", run_config=RunConfig(tracing_disabled=True))
    return model, result


async def test_real_output_and_files_reach_the_models_next_turn(recording_client: RecordingClient) -> None:
    tool = QueuedPythonTool(client=recording_client, timeout_seconds=30, cpu_limit="1", tenant="default")
    model, result = await converse(tool, expected.OUTPUT_CODE)

    [output] = tool_outputs(model.requests[-1])
    assert text_of(output) == expected.success_text(QueuedPythonTool.files_went)
    [file] = [part for part in output if part["type"] == "input_file"]
    assert file["filename"] == "squares.csv"
    assert file["file_data"] == "data:text/csv;base64," + base64.b64encode(expected.SQUARES_CSV).decode()
    assert result.final_output == "Done after 1 runs."
    [request] = recording_client.submitted
    assert (request.code, request.timeout_seconds, request.cpu_limit) == (expected.OUTPUT_CODE, 30, "1")
    assert tool.timeout_seconds is not None and tool.timeout_seconds > 30 + 60  # time limit + queue wait


async def test_traceback_reaches_the_model_and_the_loop_goes_on(recording_client: RecordingClient) -> None:
    tool = QueuedPythonTool(client=recording_client)
    model, result = await converse(tool, expected.FAILING_CODE, expected.AFTER_FAILURE_CODE)

    failure, after = tool_outputs(model.requests[-1])
    expected.assert_traceback_shown(text_of(failure))
    assert text_of(after) == "status: succeeded (exit code 0)\n--- stdout ---\nstill going\n"
    assert result.final_output == "Done after 2 runs."


async def test_timeout_is_reported_as_a_timeout(recording_client: RecordingClient) -> None:
    started = time.monotonic()
    tool = QueuedPythonTool(client=recording_client, timeout_seconds=2)
    model, result = await converse(tool, expected.LOOPING_CODE)

    [output] = tool_outputs(model.requests[-1])
    expected.assert_timed_out(text_of(output))
    assert result.final_output == "Done after 1 runs."
    assert time.monotonic() - started < 30


async def test_no_worker_ends_in_a_clear_message_within_a_bounded_wait(idle_client: Client) -> None:
    started = time.monotonic()
    tool = QueuedPythonTool(client=idle_client, **expected.NO_WORKER_OPTIONS)
    model, result = await converse(tool, "print(1)")

    [output] = tool_outputs(model.requests[-1])
    expected.assert_no_worker(text_of(output))
    assert result.final_output == "Done after 1 runs."
    assert time.monotonic() - started < 10
