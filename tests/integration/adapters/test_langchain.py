"""QueuedPythonTool through LangChain's agent loop (create_agent): real Redis, a real worker, gVisor."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sandq import Client
from sandq.langchain_adapter import QueuedPythonTool, ScriptedChatModel
from tests.conftest import RecordingClient
from tests.integration.adapters import expected

FILES_WENT = "in the tool message's artifact"


def script(*codes: str) -> Callable[[list[BaseMessage]], AIMessage]:
    """Run ``codes`` one per turn, then answer with the number of tool results seen."""

    def respond(messages: list[BaseMessage]) -> AIMessage:
        seen = [m for m in messages if isinstance(m, ToolMessage)]
        if len(seen) < len(codes):
            call = {"name": "run_python", "args": {"code": codes[len(seen)]}, "id": f"call-{len(seen)}"}
            return AIMessage(content="", tool_calls=[call])
        return AIMessage(content=f"Done after {len(seen)} runs.")

    return respond


def tool_results(model: ScriptedChatModel) -> list[ToolMessage]:
    """The tool messages of the model's last request."""
    return [m for m in model.requests[-1] if isinstance(m, ToolMessage)]


async def converse(tool: QueuedPythonTool, *codes: str) -> tuple[ScriptedChatModel, list[Any]]:
    """One user message through ``create_agent``'s loop, awaited (the tool's ``_arun``)."""
    model = ScriptedChatModel(respond=script(*codes))
    agent = create_agent(model, tools=[tool])
    state = await agent.ainvoke({"messages": [HumanMessage("go")]})
    return model, state["messages"]


async def test_real_output_and_files_reach_the_models_next_turn(recording_client: RecordingClient) -> None:
    tool = QueuedPythonTool(
        client=recording_client, timeout_seconds=30, mem_limit="1Gi", labels={"team": "qa"}, priority="batch"
    )
    model, messages = await converse(tool, expected.OUTPUT_CODE)

    [result] = tool_results(model)
    assert result.content == expected.success_text(FILES_WENT)
    assert result.status == "success"
    [block] = result.artifact
    assert (block["type"], block["mime_type"]) == ("file", "text/csv")
    assert block["extras"] == {"filename": "squares.csv"}
    assert base64.b64decode(block["base64"]) == expected.SQUARES_CSV
    assert messages[-1].content == "Done after 1 runs."
    [request] = recording_client.submitted
    assert (request.code, request.timeout_seconds, request.mem_limit, request.labels) == (
        expected.OUTPUT_CODE,
        30,
        "1Gi",
        {"team": "qa"},
    )
    assert recording_client.options[0]["priority"] == "batch"


async def test_traceback_reaches_the_model_and_the_loop_goes_on(recording_client: RecordingClient) -> None:
    tool = QueuedPythonTool(client=recording_client)
    model, messages = await converse(tool, expected.FAILING_CODE, expected.AFTER_FAILURE_CODE)

    failure, after = tool_results(model)
    expected.assert_traceback_shown(str(failure.content))
    assert after.content == "status: succeeded (exit code 0)\n--- stdout ---\nstill going\n"
    assert messages[-1].content == "Done after 2 runs."


def test_timeout_is_reported_as_a_timeout_through_the_sync_loop(recording_client: RecordingClient) -> None:
    model = ScriptedChatModel(respond=script(expected.LOOPING_CODE))
    agent = create_agent(model, tools=[QueuedPythonTool(client=recording_client, timeout_seconds=2)])
    started = time.monotonic()
    state = agent.invoke({"messages": [HumanMessage("go")]})  # the tool's sync _run

    [result] = tool_results(model)
    expected.assert_timed_out(str(result.content))
    assert state["messages"][-1].content == "Done after 1 runs."
    assert time.monotonic() - started < 30


async def test_no_worker_ends_in_a_clear_message_within_a_bounded_wait(idle_client: Client) -> None:
    started = time.monotonic()
    tool = QueuedPythonTool(client=idle_client, **expected.NO_WORKER_OPTIONS)
    model, messages = await converse(tool, "print(1)")

    [result] = tool_results(model)
    expected.assert_no_worker(str(result.content))
    assert result.artifact == []
    assert messages[-1].content == "Done after 1 runs."
    assert time.monotonic() - started < 10
