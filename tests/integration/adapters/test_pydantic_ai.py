"""QueuedPythonTool through pydantic-ai's Agent with a FunctionModel: real Redis, a real worker, gVisor."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import Agent, BinaryContent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from sandq import Client
from sandq.pydantic_ai_adapter import QueuedPythonTool
from tests.conftest import RecordingClient
from tests.integration.adapters import expected


@dataclass
class Script:
    """A FunctionModel's function: run ``codes`` one per turn, then answer; it keeps what it was sent."""

    codes: tuple[str, ...]
    requests: list[list[ModelMessage]] = field(default_factory=list)

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.requests.append(list(messages))
        seen = len(self.tool_results())
        if seen < len(self.codes):
            call = ToolCallPart("run_python", {"code": self.codes[seen]}, f"call-{seen}")
            return ModelResponse(parts=[call])
        return ModelResponse(parts=[TextPart(f"Done after {seen} runs.")])

    def tool_results(self) -> list[Any]:
        """The tool results of the last request, oldest first."""
        return [
            part.content
            for message in self.requests[-1]
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]


async def converse(tool: QueuedPythonTool, *codes: str) -> tuple[Script, str]:
    """One user message through the agent's loop."""
    script = Script(codes)
    agent = Agent(FunctionModel(script), tools=[tool], instructions="Use run_python.")
    result = await agent.run("go")
    return script, result.output


async def test_real_output_and_files_reach_the_models_next_turn(recording_client: RecordingClient) -> None:
    tool = QueuedPythonTool(client=recording_client, timeout_seconds=30, mem_requested="128Mi")
    script, answer = await converse(tool, expected.OUTPUT_CODE)

    [[text, file]] = script.tool_results()
    assert text == expected.success_text(QueuedPythonTool.files_went)
    assert isinstance(file, BinaryContent)
    assert (file.identifier, file.media_type, file.data) == ("squares.csv", "text/csv", expected.SQUARES_CSV)
    assert answer == "Done after 1 runs."
    [request] = recording_client.submitted
    assert (request.code, request.timeout_seconds) == (expected.OUTPUT_CODE, 30)
    assert request.mem_requested == "128Mi"
    assert tool.timeout is not None and tool.timeout > 30 + 60  # time limit + queue wait


async def test_traceback_reaches_the_model_and_the_loop_goes_on(recording_client: RecordingClient) -> None:
    tool = QueuedPythonTool(client=recording_client)
    script, answer = await converse(tool, expected.FAILING_CODE, expected.AFTER_FAILURE_CODE)

    failure, after = script.tool_results()
    expected.assert_traceback_shown(failure)
    assert after == "status: succeeded (exit code 0)\n--- stdout ---\nstill going\n"
    assert answer == "Done after 2 runs."


async def test_timeout_is_reported_as_a_timeout(recording_client: RecordingClient) -> None:
    started = time.monotonic()
    tool = QueuedPythonTool(client=recording_client, timeout_seconds=2)
    script, answer = await converse(tool, expected.LOOPING_CODE)

    [output] = script.tool_results()
    expected.assert_timed_out(output)
    assert answer == "Done after 1 runs."
    assert time.monotonic() - started < 30


async def test_no_worker_ends_in_a_clear_message_within_a_bounded_wait(idle_client: Client) -> None:
    started = time.monotonic()
    tool = QueuedPythonTool(client=idle_client, **expected.NO_WORKER_OPTIONS)
    script, answer = await converse(tool, "print(1)")

    [output] = script.tool_results()
    expected.assert_no_worker(output)
    assert answer == "Done after 1 runs."
    assert time.monotonic() - started < 10
