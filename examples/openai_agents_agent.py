"""An OpenAI Agents SDK agent whose Python runs in sandq's gVisor sandboxes, through the queue.

    SANDQ_REDIS_URL=redis://127.0.0.1:6379/0 python examples/openai_agents_agent.py

A ``sandq worker`` must serve that Redis. With ``OPENAI_API_KEY`` set the agent uses an OpenAI
model (gpt-4.1-mini); without it a scripted ``Model`` stands in and the run stays offline. It
prints each tool result the model got (text, then the plot as an image part) and the answer.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

from agents import Agent, Model, RunConfig, Runner, TResponseInputItem
from openai.types.responses import ResponseFunctionToolCall

from sandq.openai_agents_adapter import QueuedPythonTool, ScriptedModel, tool_call, tool_outputs

QUESTION = "Roll two dice 10,000 times: how often is the sum 7? Plot the distribution."
DICE_CODE = """\
import os, random
import matplotlib.pyplot as plt
random.seed(7)
sums = [random.randint(1, 6) + random.randint(1, 6) for _ in range(10_000)]
print("sevens =", sums.count(7))
os.makedirs("/tmp/outputs", exist_ok=True)
plt.hist(sums, bins=range(2, 14))
plt.savefig("/tmp/outputs/dice.png")"""


def scripted_reply(items: list[TResponseInputItem]) -> str | ResponseFunctionToolCall:
    """The stand-in model: run the simulation, then read the count off its real output."""
    outputs = tool_outputs(items)
    if not outputs:
        return tool_call(DICE_CODE, "call-1")
    text = " ".join(part.get("text", "") for part in outputs[-1])
    sevens = re.search(r"sevens = (\d+)", text)
    return f"A sum of 7 came up {sevens.group(1)} times in 10,000 rolls." if sevens else f"It failed:\n{text}"


def model() -> Model | str:
    """An OpenAI model when OPENAI_API_KEY is set, else the scripted stand-in."""
    return "gpt-4.1-mini" if os.environ.get("OPENAI_API_KEY") else ScriptedModel(scripted_reply)


def show(output: list[dict[str, Any]]) -> None:
    """Print one tool result as the model received it."""
    for part in output:
        if part["type"] == "input_text":
            print(f"[tool result]\n{part['text']}", end="")
        else:
            print(f"[tool result part] {part['type']} ({len(str(part))} characters)")


async def converse(redis_url: str) -> None:
    """Ask the agent one question and print what happens."""
    tool = QueuedPythonTool(redis_url=redis_url, timeout_seconds=60)
    agent = Agent(name="analyst", instructions="Use run_python to compute.", model=model(), tools=[tool])
    print(f"[user] {QUESTION}")
    result = await Runner.run(agent, QUESTION, run_config=RunConfig(tracing_disabled=True))
    for item in result.to_input_list():
        if item.get("type") == "function_call_output":
            show(item["output"])  # type: ignore[typeddict-item]
    print(f"[agent] {result.final_output}")
    tool.runner.close()


if __name__ == "__main__":
    asyncio.run(converse(os.environ.get("SANDQ_REDIS_URL", "redis://127.0.0.1:6379/0")))
