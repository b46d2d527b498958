"""``ScriptedLlm``: a deterministic stand-in model, for offline runs and tests."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import Field
from typing_extensions import override


class ScriptedLlm(BaseLlm):
    """A model whose every reply is ``respond(request)``; it records the requests it got."""

    model: str = "sandq-scripted"
    respond: Callable[[LlmRequest], str]
    requests: list[LlmRequest] = Field(default_factory=list)

    @override
    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        """Record the request and answer it with one text part."""
        self.requests.append(llm_request.model_copy(deep=True))
        text = self.respond(llm_request)
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))


def tool_outputs(llm_request: LlmRequest) -> list[str]:
    """The code execution results (``tool_output`` blocks) the request carries, oldest first."""
    outputs = []
    for content in llm_request.contents:
        for part in content.parts or []:
            if part.code_execution_result is not None:
                outputs.append(part.code_execution_result.output or "")
            elif part.text and part.text.startswith("```tool_output\n"):
                outputs.append(part.text.removeprefix("```tool_output\n").removesuffix("\n```"))
    return outputs
