"""The examples/<framework>_agent.py scripts run end to end, offline, against a real worker."""

from __future__ import annotations

import pytest

from sandq import Settings
from tests.conftest import WorkerProcess, run_example


@pytest.mark.parametrize(
    ("script", "shown"),
    [
        (
            "langchain_agent.py",
            [
                "count = 1229\noutput files (in the tool message's artifact): primes.txt (text/plain,",
                "[artifact] primes.txt (text/plain)",
                "[ai] There are 1229 primes below 10,000; the list is in primes.txt.",
            ],
        ),
        (
            "openai_agents_agent.py",
            [
                "output files (attached after this text): dice.png (image/png,",
                "[tool result part] input_image",
                "[agent] A sum of 7 came up 1700 times in 10,000 rolls.",  # random.seed(7)
            ],
        ),
        (
            "pydantic_ai_agent.py",
            [
                "longest = 6171 261\n",
                "[output file] collatz.csv (text/csv)",
                "[answer] 6171, with 261 steps.",
            ],
        ),
        (
            "autogen_agent.py",
            ["[sandbox, exit code 0]\nstatus: succeeded (exit code 0)", "pi is about 3.1372\n", "/pi.png\n"],
        ),
    ],
)
def test_example_runs_offline_end_to_end(
    script: str, shown: list[str], settings: Settings, worker: WorkerProcess
) -> None:
    done = run_example(script, settings)
    for text in shown:
        assert text in done.stdout
