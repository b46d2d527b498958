"""OpenAI Agents SDK integration: ``QueuedPythonTool``, a ``FunctionTool`` that runs Python through sandq.

Importing this module needs ``openai-agents`` (``pip install sandq[openai-agents]``); ``import
sandq`` does not. Give the tool to an ``Agent(tools=[...])`` and run it with the ``Runner``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Unpack

from agents import (
    AgentOutputSchemaBase,
    FunctionTool,
    Handoff,
    Model,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    Tool,
    ToolOutputFileContent,
    ToolOutputImage,
    ToolOutputText,
    TResponseInputItem,
    Usage,
)
from agents.items import TResponseStreamEvent
from agents.strict_schema import ensure_strict_json_schema
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from pydantic import ValidationError
from typing_extensions import override

from sandq.agent_results import (
    TOOL_DESCRIPTION,
    TOOL_NAME,
    CodeInput,
    Outcome,
    SandboxOptions,
    SandboxRunner,
    refused,
)
from sandq.validation import describe

ToolOutput = ToolOutputText | ToolOutputImage | ToolOutputFileContent


@dataclass(init=False)
class QueuedPythonTool(FunctionTool):
    """An Agents SDK tool that runs the model's Python in a sandq gVisor sandbox, through the queue.

    Takes the ``SandboxOptions`` as keyword arguments (request fields default to the contract's),
    plus the tool's ``name`` and ``description``. Its ``timeout_seconds`` is the longest a run can
    take through sandq (the request's time limit, the queue wait and Redis reconnects); a run
    cut by it is cancelled in sandq too. The model gets a text part with the status and exit code,
    then stdout and stderr apart, followed by the output files (those the code writes to
    ``/tmp/outputs/``): images as image parts, other files as file parts. It never raises: a full
    queue, an unreachable Redis, no worker or a fault in sandq becomes a text saying what
    happened and what to do.
    """

    files_went: ClassVar[str] = "attached after this text"
    runner: SandboxRunner = field(init=False, repr=False, compare=False)

    def __init__(
        self, *, name: str = TOOL_NAME, description: str = TOOL_DESCRIPTION, **options: Unpack[SandboxOptions]
    ) -> None:
        """A tool on the queue ``options`` name; see the class docstring."""
        self.runner = SandboxRunner("QueuedPythonTool", **options)
        super().__init__(
            name=name,
            description=description,
            params_json_schema=ensure_strict_json_schema(CodeInput.model_json_schema()),
            on_invoke_tool=self._invoke,
            timeout_seconds=self.runner.longest_seconds,
        )

    async def _invoke(self, context: object, arguments: str) -> list[ToolOutput]:
        try:
            code = CodeInput.model_validate_json(arguments).code
        except ValidationError as error:
            return _tool_outputs(refused(describe(error)))
        return _tool_outputs(await self.runner.run_async(code))


def _tool_outputs(outcome: Outcome) -> list[ToolOutput]:
    outputs: list[ToolOutput] = [ToolOutputText(text=outcome.as_text(QueuedPythonTool.files_went))]
    for file in outcome.files:
        url = f"data:{file.mime_type};base64,{base64.b64encode(file.content).decode('ascii')}"
        if file.mime_type.startswith("image/"):
            outputs.append(ToolOutputImage(image_url=url))
        else:
            outputs.append(ToolOutputFileContent(file_data=url, filename=file.name))
    return outputs


def tool_call(code: str, call_id: str) -> ResponseFunctionToolCall:
    """A model's call of the tool (named ``run_python``) with ``code``, for scripts."""
    arguments = CodeInput(code=code).model_dump_json()
    return ResponseFunctionToolCall(
        type="function_call", name=TOOL_NAME, call_id=call_id, arguments=arguments
    )


def tool_outputs(items: str | list[TResponseInputItem]) -> list[Any]:
    """The tool results (``function_call_output`` items' ``output``) in a model's input, oldest first."""
    if isinstance(items, str):
        return []
    return [item["output"] for item in items if item.get("type") == "function_call_output"]  # type: ignore[typeddict-item]


class ScriptedModel(Model):
    """A deterministic stand-in ``Model``, for offline runs and tests.

    Every reply is ``respond(input)``: a text answer, or a tool call (see ``tool_call``). The
    input of each call is kept in ``requests``. Only ``Runner.run`` is supported, not streaming.
    """

    def __init__(self, respond: Callable[[list[TResponseInputItem]], str | ResponseFunctionToolCall]) -> None:
        """A model answering with ``respond``."""
        self.respond = respond
        self.requests: list[list[TResponseInputItem]] = []

    @override
    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        """Record the input and answer it."""
        items: list[TResponseInputItem] = (
            [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        )
        self.requests.append(items)
        reply = self.respond(items)
        if isinstance(reply, ResponseFunctionToolCall):
            return ModelResponse(output=[reply], usage=Usage(), response_id=None)
        text = ResponseOutputText(type="output_text", text=reply, annotations=[])
        message = ResponseOutputMessage(
            id=f"msg-{len(self.requests)}", type="message", role="assistant", status="completed",
            content=[text],
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    @override
    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        """Not supported: a scripted model answers ``Runner.run`` only."""
        raise NotImplementedError("ScriptedModel answers Runner.run only, not Runner.run_streamed")
