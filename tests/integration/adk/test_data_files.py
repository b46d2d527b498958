"""ADK's data-file flow (``optimize_data_file=True``) on sandq: a CSV the user attaches is explored
by ADK's own pandas code, the model's pandas code summarises it, the real numbers reach the model's
next turn, and its matplotlib plot comes back as an artifact. Real worker, real gVisor sandboxes
with the sandbox environment's pandas and matplotlib."""

from __future__ import annotations

import csv
import io
import random
import re
from collections import defaultdict

from google.adk.models.llm_request import LlmRequest
from google.genai import types

from sandq import Settings
from sandq.adk_adapter import QueuedCodeExecutor, tool_outputs
from tests.conftest import RecordingClient
from tests.integration.adk.conftest import APP, USER, converse, python_block

REGIONS = ("north", "south", "east", "west")
SUMMARY = """\
import matplotlib.pyplot as plt
import pandas as pd

sales = pd.read_csv({name!r})
totals = sales.groupby("region")["amount"].sum().sort_values(ascending=False)
print(totals.round(2).to_string())
totals.plot.bar(title="Sales by region")
plt.tight_layout()
plt.savefig("/tmp/outputs/totals.png")
"""


def sales_csv(rows: int = 400) -> bytes:
    rng = random.Random(14)
    out = io.StringIO()
    out.write("region,month,amount\n")
    for i in range(rows):
        out.write(f"{rng.choice(REGIONS)},{i % 12 + 1},{rng.uniform(10, 500):.2f}\n")
    return out.getvalue().encode()


def expected_totals(data: bytes) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for row in csv.DictReader(io.StringIO(data.decode())):
        totals[row["region"]] += float(row["amount"])
    return totals


def analyst(request: LlmRequest) -> str:
    """The scripted model: pandas code on the file ADK names, then an answer from its output."""
    outputs = tool_outputs(request)
    if len(outputs) == 1:  # ADK has explored the attached file: summarise it
        text = " ".join(p.text or "" for c in request.contents for p in c.parts or [])
        name = re.search(r"Available file: `([^`]+)`", text)
        assert name is not None, text
        return python_block(SUMMARY.format(name=name.group(1)))
    top = outputs[-1].splitlines()[2].split()  # "Code execution result:", "region", then the largest
    return f"{top[0]} sells most: {top[1]}."


async def test_an_attached_csv_is_explored_summarised_and_plotted(settings: Settings, worker: object) -> None:
    client = RecordingClient(settings)
    executor = QueuedCodeExecutor(
        client=client, optimize_data_file=True, timeout_seconds=240, queue_wait_seconds=300
    )
    data = sales_csv()
    message = [
        types.Part(text="Which region sells most? Plot the totals."),
        types.Part(inline_data=types.Blob(mime_type="text/csv", data=data)),
    ]
    conversation = await converse(executor, analyst, message)

    explored, summary = conversation.outputs()
    assert explored.startswith("Code execution result:\nTotal rows: 400\nTotal columns: 3\n"), explored
    assert "region" in explored and "amount" in explored and "float64" in explored
    totals = expected_totals(data)
    lines = summary.splitlines()
    assert lines[:2] == ["Code execution result:", "region"], summary
    printed = {line.split()[0]: float(line.split()[1]) for line in lines[2:6]}
    assert printed == {region: round(total, 2) for region, total in totals.items()}
    assert list(printed) == sorted(totals, key=totals.__getitem__, reverse=True)
    assert summary.endswith("Saved artifacts:\n`totals.png`"), summary  # no warning on stderr either
    best = max(totals, key=totals.__getitem__)
    assert conversation.final_text() == f"{best} sells most: {totals[best]:.2f}."
    assert conversation.outcomes() == [types.Outcome.OUTCOME_OK, types.Outcome.OUTCOME_OK]

    assert [[(f.name, f.content) for f in r.input_files] for r in client.submitted] == [
        [("data_1_2.csv", data)],
        [("data_1_2.csv", data)],
    ]
    artifacts = conversation.runner.artifact_service
    assert artifacts is not None
    part = await artifacts.load_artifact(
        app_name=APP, user_id=USER, session_id=conversation.session_id, filename="totals.png"
    )
    assert part is not None and part.inline_data is not None and part.inline_data.data is not None
    assert part.inline_data.mime_type == "image/png"
    assert part.inline_data.data.startswith(b"\x89PNG\r\n\x1a\n") and len(part.inline_data.data) > 5000
    client.close()
