"""LangChain/LangGraph integration: ``QueuedPythonTool``, a ``BaseTool`` that runs Python through sandq.

Importing this module needs ``langchain-core`` (``pip install sandq[langchain]``); ``import sandq``
does not. The tool works wherever LangChain takes tools: ``langchain.agents.create_agent``,
LangGraph's prebuilt agents and ``ToolNode``, or ``tool.invoke`` by hand.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, Literal, Unpack

from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForLLMRun,
    CallbackManagerForToolRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.content import (
    FileContentBlock,
    ImageContentBlock,
    create_file_block,
    create_image_block,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import ArgsSchema, BaseTool
from pydantic import ConfigDict, Field
from typing_extensions import override

from sandq.agent_results import TOOL_DESCRIPTION, TOOL_NAME, CodeInput, Outcome, SandboxOptions, SandboxRunner

Artifact = list[ImageContentBlock | FileContentBlock]
"""The output files, as LangChain's standard multimodal content blocks."""


class QueuedPythonTool(BaseTool):
    """A LangChain tool that runs the model's Python in a sandq gVisor sandbox, through the queue.

    Takes the ``SandboxOptions`` as keyword arguments (request fields default to the contract's),
    plus the tool's ``name`` and ``description``. The model reads the status with the exit code,
    then stdout and stderr apart. Output files (those the code writes to ``/tmp/outputs/``) are
    the ``ToolMessage``'s ``artifact``: image and file content blocks, not sent to the model.
    It never raises: a full queue, an unreachable Redis, no worker or a fault in sandq becomes a
    tool message saying what happened and what to do.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = TOOL_NAME
    description: str = TOOL_DESCRIPTION
    args_schema: ArgsSchema | None = CodeInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    runner: SandboxRunner = Field(exclude=True)

    def __init__(
        self, *, name: str = TOOL_NAME, description: str = TOOL_DESCRIPTION, **options: Unpack[SandboxOptions]
    ) -> None:
        """A tool on the queue ``options`` name; see the class docstring."""
        super().__init__(
            name=name, description=description, runner=SandboxRunner("QueuedPythonTool", **options)
        )

    @override
    def _run(self, code: str, run_manager: CallbackManagerForToolRun | None = None) -> tuple[str, Artifact]:
        return _content_and_artifact(self.runner.run(code))

    @override
    async def _arun(
        self, code: str, run_manager: AsyncCallbackManagerForToolRun | None = None
    ) -> tuple[str, Artifact]:
        return _content_and_artifact(await self.runner.run_async(code))


def _content_and_artifact(outcome: Outcome) -> tuple[str, Artifact]:
    artifact: Artifact = []
    for file in outcome.files:
        data = base64.b64encode(file.content).decode("ascii")
        make = create_image_block if file.mime_type.startswith("image/") else create_file_block
        artifact.append(make(base64=data, mime_type=file.mime_type, filename=file.name))
    return outcome.as_text("in the tool message's artifact"), artifact


class ScriptedChatModel(BaseChatModel):
    """A deterministic stand-in chat model, for offline runs and tests.

    Every reply is ``respond(messages)``, an ``AIMessage`` that may carry tool calls; the
    messages of each call are kept in ``requests``. Binding tools changes nothing: the script
    decides which tools it calls.
    """

    respond: Callable[[list[BaseMessage]], AIMessage]
    requests: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    @override
    def _llm_type(self) -> str:
        return "sandq-scripted"

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.requests.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=self.respond(list(messages)))])

    @override
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model itself: its script chooses the tool calls."""
        return self
