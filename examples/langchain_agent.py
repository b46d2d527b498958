"""A LangChain agent (``create_agent``) whose Python runs in sandq's gVisor sandboxes, through the queue.

    SANDQ_REDIS_URL=redis://127.0.0.1:6379/0 python examples/langchain_agent.py

Start ``sandq worker`` on that Redis first. A scripted model stands in for a real one, so the
example runs offline; pass any tool-calling chat model to ``create_agent`` instead. It prints
the conversation, then the output files the tool message carries as its artifact.
"""

from __future__ import annotations

import os
import re

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sandq.langchain_adapter import QueuedPythonTool, ScriptedChatModel

QUESTION = "How many primes are there below 10,000? Give me the list as a file, too."
PRIMES_CODE = """\
import os
primes = [n for n in range(2, 10_000) if all(n % d for d in range(2, int(n ** 0.5) + 1))]
os.makedirs("/tmp/outputs", exist_ok=True)
with open("/tmp/outputs/primes.txt", "w") as f:
    f.write("\\n".join(map(str, primes)))
print("count =", len(primes))"""


def scripted_reply(messages: list[BaseMessage]) -> AIMessage:
    """The stand-in model: call the tool first, then answer from its real output."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        call = {"name": "run_python", "args": {"code": PRIMES_CODE}, "id": "call-1"}
        return AIMessage("", tool_calls=[call])
    found = re.search(r"count = (\d+)", str(results[-1].content))
    if found is None:
        return AIMessage(f"The sandbox did not give me the count; it said:\n{results[-1].content}")
    return AIMessage(f"There are {found.group(1)} primes below 10,000; the list is in primes.txt.")


def main(redis_url: str) -> None:
    """Ask the agent one question and print what happens."""
    tool = QueuedPythonTool(redis_url=redis_url, timeout_seconds=60)
    agent = create_agent(ScriptedChatModel(respond=scripted_reply), tools=[tool])
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    for message in state["messages"]:
        print(f"[{message.type}] {message.content or message.tool_calls}".strip())
        for block in getattr(message, "artifact", None) or []:
            print(f"[artifact] {block['extras']['filename']} ({block['mime_type']})")
    tool.runner.close()


if __name__ == "__main__":
    main(os.environ.get("SANDQ_REDIS_URL", "redis://127.0.0.1:6379/0"))
