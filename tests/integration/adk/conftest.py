"""ADK's real agent loop (LlmAgent, InMemoryRunner) around a scripted model and QueuedCodeExecutor."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.events import Event
from google.adk.models.llm_request import LlmRequest
from google.adk.runners import InMemoryRunner
from google.genai import types

from sandq import Client
from sandq.adk_adapter import QueuedCodeExecutor, ScriptedLlm, tool_outputs

APP = "sandq-adk-tests"
USER = "tester"


def python_block(code: str) -> str:
    return f"Let me compute that.\n```python\n{code}\n```\n"


def replies(*texts: str) -> Callable[[LlmRequest], str]:
    """A script: the n-th reply for the n-th request of a session (the last one repeats)."""

    def respond(request: LlmRequest) -> str:
        return texts[min(len(tool_outputs(request)), len(texts) - 1)]

    return respond


@dataclass
class Conversation:
    """One finished agent run: its events, the model's requests, the runner and session."""

    runner: InMemoryRunner
    session_id: str
    model: ScriptedLlm
    events: list[Event] = field(default_factory=list)

    def outputs(self) -> list[str]:
        """The execution results the model was shown, from its last request."""
        return tool_outputs(self.model.requests[-1])

    def outcomes(self) -> list[types.Outcome | None]:
        """How ADK judged each execution: OUTCOME_FAILED whenever stderr was non-empty."""
        return [
            part.code_execution_result.outcome
            for event in self.events
            for part in (event.content.parts or [] if event.content else [])
            if part.code_execution_result is not None
        ]

    def final_text(self) -> str:
        last = self.events[-1]
        assert last.content is not None and last.content.parts
        return "".join(p.text or "" for p in last.content.parts)


async def converse(
    executor: QueuedCodeExecutor,
    respond: Callable[[LlmRequest], str],
    message: str | list[types.Part] = "go",
    state: dict[str, Any] | None = None,
) -> Conversation:
    """Run one user message (text, or parts such as an attached file) through an LlmAgent using
    ``executor``, to the end."""
    model = ScriptedLlm(respond=respond)
    agent = LlmAgent(
        name="analyst",
        model=model,
        instruction="Write Python in ```python fenced blocks; it runs in a sandbox.",
        code_executor=executor,
    )
    runner = InMemoryRunner(agent=agent, app_name=APP)
    session = await runner.session_service.create_session(
        app_name=APP, user_id=USER, session_id=uuid.uuid4().hex, state=state
    )
    conversation = Conversation(runner, session.id, model)
    parts = [types.Part(text=message)] if isinstance(message, str) else message
    content = types.Content(role="user", parts=parts)
    async for event in runner.run_async(user_id=USER, session_id=session.id, new_message=content):
        conversation.events.append(event)
    return conversation


@pytest.fixture
def executor(client: Client, worker: object) -> QueuedCodeExecutor:
    """An executor on the session's queue, served by the real worker."""
    return QueuedCodeExecutor(client=client, timeout_seconds=30, queue_wait_seconds=90)
