"""An AutoGen ``CodeExecutorAgent`` whose code blocks run in sandq's gVisor sandboxes, through the queue.

    SANDQ_REDIS_URL=redis://127.0.0.1:6379/0 python examples/autogen_agent.py

Needs a ``sandq worker`` on that Redis. A ``ReplayChatCompletionClient`` replays the model's
two replies (the code, then a closing remark), so the example runs offline; use any AutoGen
model client instead for a real model. It prints the run and where the output files were saved.
"""

from __future__ import annotations

import asyncio
import os
import warnings

from autogen_agentchat.agents import CodeExecutorAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import CodeExecutionEvent
from autogen_ext.models.replay import ReplayChatCompletionClient

from sandq.autogen_adapter import QueuedCodeExecutor

TASK = "Estimate pi with a Monte Carlo simulation of 200,000 points, and plot the points."
PI_CODE = """\
import os, random
import matplotlib.pyplot as plt
random.seed(1)
points = [(random.random(), random.random()) for _ in range(200_000)]
inside = [p for p in points if p[0] ** 2 + p[1] ** 2 <= 1]
print("pi is about", 4 * len(inside) / len(points))
os.makedirs("/tmp/outputs", exist_ok=True)
plt.scatter(*zip(*inside[:3000]), s=1)
plt.savefig("/tmp/outputs/pi.png")"""


async def run(redis_url: str) -> None:
    """Run the task and print what happens."""
    executor = QueuedCodeExecutor(redis_url=redis_url, timeout_seconds=60)
    model = ReplayChatCompletionClient([f"```python\n{PI_CODE}\n```", "The estimate is printed above."])
    with warnings.catch_warnings():  # the example runs its own fixed code: no approval step
        warnings.simplefilter("ignore", UserWarning)
        agent = CodeExecutorAgent(
            "coder", code_executor=executor, model_client=model, supported_languages=["python"]
        )
    async for message in agent.run_stream(task=TASK):
        if isinstance(message, CodeExecutionEvent):
            print(f"[sandbox, exit code {message.result.exit_code}]\n{message.result.output}", end="")
            print(*(f"[saved] {path}" for path in message.result.output_files), sep="\n")  # type: ignore[attr-defined]
        elif not isinstance(message, TaskResult):  # the TaskResult repeats the last message
            print(f"[{message.source}] {message.to_text()}")
    executor.runner.close()


if __name__ == "__main__":
    asyncio.run(run(os.environ.get("SANDQ_REDIS_URL", "redis://127.0.0.1:6379/0")))
