"""A pydantic-ai agent whose Python runs in sandq's gVisor sandboxes, through the queue.

    SANDQ_REDIS_URL=redis://127.0.0.1:6379/0 python examples/pydantic_ai_agent.py

Run ``sandq worker`` against that Redis beforehand. A ``FunctionModel`` plays the model, so
nothing leaves the machine; give ``Agent`` a real model name instead to use one. It prints
the messages of the run, with the output files that came back as ``BinaryContent``.
"""

from __future__ import annotations

import os
import re

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from sandq.pydantic_ai_adapter import QueuedPythonTool

QUESTION = "Which start below 10,000 has the longest Collatz sequence? Save the lengths as CSV."
COLLATZ_CODE = """\
import os
def steps(n):
    return 0 if n == 1 else 1 + steps(n // 2 if n % 2 == 0 else 3 * n + 1)
lengths = {n: steps(n) for n in range(1, 10_000)}
print("longest =", max(lengths, key=lengths.get), lengths[max(lengths, key=lengths.get)])
os.makedirs("/tmp/outputs", exist_ok=True)
with open("/tmp/outputs/collatz.csv", "w") as f:
    f.writelines(f"{n},{s}\\n" for n, s in lengths.items())"""


def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The stand-in model: call the tool once, then answer from what it returned."""
    returns = [p.content for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
    if not returns:
        return ModelResponse(parts=[ToolCallPart("run_python", {"code": COLLATZ_CODE}, "call-1")])
    text = returns[-1][0] if isinstance(returns[-1], list) else returns[-1]
    found = re.search(r"longest = (\d+) (\d+)", str(text))
    answer = f"{found.group(1)}, with {found.group(2)} steps." if found else f"No answer; it said:\n{text}"
    return ModelResponse(parts=[TextPart(answer)])


def main(redis_url: str) -> None:
    """Ask the agent one question and print what happens."""
    tool = QueuedPythonTool(redis_url=redis_url, timeout_seconds=60)
    agent = Agent(FunctionModel(scripted_model), tools=[tool], instructions="Use run_python to compute.")
    result = agent.run_sync(QUESTION)
    print(f"[user] {QUESTION}")
    for message in result.all_messages():
        for part in message.parts:
            if isinstance(part, ToolCallPart):
                print(f"[model runs]\n{part.args_as_dict()['code']}")
            elif isinstance(part, ToolReturnPart):
                text, *files = part.content if isinstance(part.content, list) else [part.content]
                print(f"[tool result]\n{text}", end="")
                print(*(f"[output file] {f.identifier} ({f.media_type})" for f in files), sep="\n")
    print(f"[answer] {result.output}")
    tool.runner.close()


if __name__ == "__main__":
    main(os.environ.get("SANDQ_REDIS_URL", "redis://127.0.0.1:6379/0"))
