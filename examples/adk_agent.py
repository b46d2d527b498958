"""A Google ADK agent whose Python runs in sandq's gVisor sandboxes, through the queue.

    SANDQ_REDIS_URL=redis://127.0.0.1:6379/0 python examples/adk_agent.py

It needs a running ``sandq worker`` on that Redis. With ``GOOGLE_API_KEY`` set the
agent uses Gemini (gemini-2.5-flash); without it a scripted model stands in, so the
example runs offline, end to end. It prints the conversation and the saved artifacts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re

from google.adk.agents import LlmAgent
from google.adk.events import Event
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.runners import InMemoryRunner
from google.genai import types

from sandq.adk_adapter import QueuedCodeExecutor, ScriptedLlm, tool_outputs

APP = "sandq-example"
USER = "demo-user"
QUESTION = "What are the first 15 Fibonacci numbers and their sum? Plot them, too."

# optimize_data_file is off, so ADK adds no code-format instruction of its own:
# the agent's instruction has to ask for fenced ```python blocks.
INSTRUCTION = """\
You answer with the help of a Python sandbox. To run code, write it in one
fenced block that starts with ```python and ends with ```; you will then see
its output. Each block runs in a fresh sandbox: nothing carries over between
blocks. Save files to /tmp/outputs/ (e.g. matplotlib plots as PNG) to hand
them to the user. When you have the answer, reply in plain text, without code.
"""

FIBONACCI_CODE = """\
import os
import matplotlib.pyplot as plt

fib = [0, 1]
while len(fib) < 15:
    fib.append(fib[-1] + fib[-2])
print("fib =", fib)
print("sum =", sum(fib))

os.makedirs("/tmp/outputs", exist_ok=True)
plt.plot(range(15), fib, marker="o")
plt.title("The first 15 Fibonacci numbers")
plt.savefig("/tmp/outputs/fibonacci.png")"""


def scripted_reply(request: LlmRequest) -> str:
    """The stand-in model: write the code first, then answer from its real output."""
    outputs = tool_outputs(request)
    if not outputs:
        return f"I'll compute it in the sandbox.\n```python\n{FIBONACCI_CODE}\n```"
    total = re.search(r"sum = (\d+)", outputs[-1])
    if total is None:
        return f"The sandbox did not give me the sum; it said:\n{outputs[-1]}"
    return f"The sum of the first 15 Fibonacci numbers is {total.group(1)}; the plot is fibonacci.png."


def model() -> BaseLlm | str:
    """Gemini when GOOGLE_API_KEY is set, else the scripted stand-in."""
    if os.environ.get("GOOGLE_API_KEY"):
        return "gemini-2.5-flash"
    return ScriptedLlm(respond=scripted_reply)


def show(event: Event) -> None:
    """Print one event of the conversation."""
    for part in event.content.parts or [] if event.content else []:
        if part.text:
            print(f"[{event.author}] {part.text.strip()}")
        if part.executable_code is not None:
            print(f"[{event.author} runs]\n{part.executable_code.code}")
        if part.code_execution_result is not None:
            outcome = part.code_execution_result.outcome
            print(f"[sandbox: {outcome.name if outcome else '?'}]\n{part.code_execution_result.output}")
    for name, version in event.actions.artifact_delta.items():
        print(f"[artifact saved] {name} (version {version})")


async def converse(redis_url: str) -> None:
    """Ask the agent one question and print everything that happens."""
    executor = QueuedCodeExecutor(redis_url=redis_url, timeout_seconds=60, queue_wait_seconds=60)
    agent = LlmAgent(name="analyst", model=model(), instruction=INSTRUCTION, code_executor=executor)
    runner = InMemoryRunner(agent=agent, app_name=APP)
    session = await runner.session_service.create_session(app_name=APP, user_id=USER)
    print(f"[user] {QUESTION}")
    message = types.Content(role="user", parts=[types.Part(text=QUESTION)])
    async for event in runner.run_async(user_id=USER, session_id=session.id, new_message=message):
        show(event)
    artifacts = runner.artifact_service
    if artifacts is not None:
        keys = await artifacts.list_artifact_keys(app_name=APP, user_id=USER, session_id=session.id)
        print(f"[artifacts] {', '.join(keys) or 'none'}")
    if executor.client is not None:
        executor.client.close()


def main(redis_url: str) -> None:
    """Run the example against the sandq queue at ``redis_url``."""
    asyncio.run(converse(redis_url))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("google_adk").setLevel(logging.ERROR)  # token-usage notes about the scripted model
    main(os.environ.get("SANDQ_REDIS_URL", "redis://127.0.0.1:6379/0"))
