"""QueuedCodeExecutor through ADK's agent loop: real Redis, a real worker, gVisor sandboxes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import pytest
from google.adk.code_executors import GkeCodeExecutor
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from sandq import Client, ExecutionRequest, Settings
from sandq.adk_adapter import QueuedCodeExecutor, tool_outputs
from sandq.adk_adapter.executor import ERROR_MARKER, STDOUT_MARKER, WARNINGS_MARKER
from tests.conftest import RecordingClient, free_port, run_example
from tests.integration.adk.conftest import APP, USER, converse, python_block, replies


async def test_real_output_of_the_code_reaches_the_models_next_request(
    settings: Settings, worker: object
) -> None:
    client = RecordingClient(settings)
    executor = QueuedCodeExecutor(
        client=client, timeout_seconds=30, cpu_limit="1", mem_limit="1Gi", labels={"team": "qa"}
    )
    code = "import hashlib\nprint(hashlib.sha256(b'sandq').hexdigest(), sum(i * i for i in range(1000)))"
    conversation = await converse(executor, replies(python_block(code), "The digest is computed."))

    expected = f"{hashlib.sha256(b'sandq').hexdigest()} {sum(i * i for i in range(1000))}"
    assert len(conversation.model.requests) == 2
    assert conversation.outputs() == [f"Code execution result:\n{expected}\n\n"]
    assert conversation.outcomes() == [types.Outcome.OUTCOME_OK]
    assert conversation.final_text() == "The digest is computed."
    [request] = client.submitted
    assert (request.code, request.timeout_seconds, request.cpu_limit, request.mem_limit) == (
        code,
        30,
        "1",
        "1Gi",
    )
    invocation = conversation.events[-1].invocation_id
    assert request.labels == {"team": "qa", "adk.invocation_id": invocation, "adk.agent": "analyst"}
    client.close()


async def test_unreachable_redis_becomes_a_plain_error_for_the_model() -> None:
    executor = QueuedCodeExecutor(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    conversation = await converse(executor, replies(python_block("print(1)"), "Redis is down."))

    [output] = conversation.outputs()
    assert output.startswith("sandq could not queue the code, so nothing ran (ConnectionError:")
    assert conversation.final_text() == "Redis is down."


async def test_exception_returns_traceback_on_stderr_and_the_agent_continues(
    executor: QueuedCodeExecutor,
) -> None:
    code = "print('before')\nraise ValueError('boom')"
    conversation = await converse(executor, replies(python_block(code), "I see the error."))

    [output] = conversation.outputs()
    assert output.startswith(f"{STDOUT_MARKER}\nbefore\n{ERROR_MARKER}\nTraceback")
    assert "ValueError: boom" in output
    assert conversation.final_text() == "I see the error."
    assert conversation.outcomes() == [types.Outcome.OUTCOME_FAILED]


async def test_warnings_on_success_stay_visible_without_failing_the_run(executor: QueuedCodeExecutor) -> None:
    code = "import warnings\nprint(2 ** 10)\nwarnings.warn('old API')"
    conversation = await converse(executor, replies(python_block(code), "Done."))

    [output] = conversation.outputs()
    assert output.startswith(f"Code execution result:\n1024\n{WARNINGS_MARKER}\n")
    assert "UserWarning: old API" in output
    assert conversation.outcomes() == [types.Outcome.OUTCOME_OK]


async def test_timeout_is_reported_plainly_and_the_agent_continues(client: Client, worker: object) -> None:
    executor = QueuedCodeExecutor(client=client, timeout_seconds=2, queue_wait_seconds=90)
    started = time.monotonic()
    conversation = await converse(executor, replies(python_block("while True:\n    pass"), "Too slow."))

    [output] = conversation.outputs()
    assert "sandq: the code was stopped after its time limit of 2 s; output up to then is kept." in output
    assert conversation.outcomes() == [types.Outcome.OUTCOME_FAILED]
    assert conversation.final_text() == "Too slow."
    assert time.monotonic() - started < 30


async def test_input_file_is_read_by_the_code(executor: QueuedCodeExecutor) -> None:
    csv = "city,temp\nOslo,4\nLima,19\nCairo,31\n"
    encoded = base64.b64encode(csv.encode()).decode()
    files = [{"name": "temps.csv", "content": encoded, "mime_type": "text/csv"}]
    code = (
        "import csv\nrows = list(csv.DictReader(open('temps.csv')))\n"
        "print(max(rows, key=lambda r: int(r['temp']))['city'], len(rows))"
    )
    # ADK keeps a session's input files in its state, as it does for data files a user attaches.
    conversation = await converse(
        executor, replies(python_block(code), "Cairo."), state={"_code_executor_input_files": files}
    )

    assert conversation.outputs() == ["Code execution result:\nCairo 3\n\n"]


async def test_matplotlib_png_is_saved_as_an_artifact(executor: QueuedCodeExecutor) -> None:
    code = (
        "import os\n"
        "import matplotlib.pyplot as plt\n"
        "os.makedirs('/tmp/outputs', exist_ok=True)\n"
        "plt.plot([1, 4, 9, 16])\nplt.savefig('/tmp/outputs/squares.png')\nprint('saved')"
    )
    conversation = await converse(executor, replies(python_block(code), "Here is the plot."))

    [output] = conversation.outputs()
    assert output.startswith("Code execution result:\nsaved\n")  # then any font warnings
    assert output.endswith("Saved artifacts:\n`squares.png`")
    artifacts = conversation.runner.artifact_service
    assert artifacts is not None
    keys = await artifacts.list_artifact_keys(app_name=APP, user_id=USER, session_id=conversation.session_id)
    assert keys == ["squares.png"]
    part = await artifacts.load_artifact(
        app_name=APP, user_id=USER, session_id=conversation.session_id, filename="squares.png"
    )
    assert part is not None and part.inline_data is not None and part.inline_data.data is not None
    assert part.inline_data.mime_type == "image/png"
    assert part.inline_data.data.startswith(b"\x89PNG\r\n\x1a\n")


async def test_full_queue_becomes_a_plain_error_for_the_model(idle_client: Client) -> None:
    waiting = idle_client.submit(ExecutionRequest(code="print('first')"))  # the one place (max_queued=1)
    executor = QueuedCodeExecutor(client=idle_client)
    conversation = await converse(executor, replies(python_block("print(1)"), "Later then."))

    [output] = conversation.outputs()
    assert output.startswith("sandq's queue is full, so nothing ran: 1 executions are queued already")
    assert "Run the same code again after that pause" in output
    assert conversation.final_text() == "Later then."
    waiting.cancel()


async def test_no_worker_means_a_bounded_wait_then_a_clear_message(idle_client: Client) -> None:
    executor = QueuedCodeExecutor(client=idle_client, timeout_seconds=1, queue_wait_seconds=0.5)
    started = time.monotonic()
    conversation = await converse(executor, replies(python_block("print(1)"), "No workers."))
    elapsed = time.monotonic() - started

    [output] = conversation.outputs()
    assert output.startswith("sandq: no result within 1.5 s")
    assert "ask the operator to check that `sandq worker` is running" in output
    assert conversation.final_text() == "No workers."
    assert elapsed < 10


async def test_twenty_concurrent_sessions_each_get_their_own_result(executor: QueuedCodeExecutor) -> None:
    def respond(request: LlmRequest) -> str:
        seed = int(request.contents[0].parts[0].text or "")  # type: ignore[index]
        if not tool_outputs(request):
            return python_block(f"import hashlib\nprint(hashlib.md5(b'{seed}').hexdigest())")
        return "ok"

    seeds = list(range(100, 120))
    conversations = await asyncio.gather(*(converse(executor, respond, str(seed)) for seed in seeds))

    for seed, conversation in zip(seeds, conversations, strict=True):
        digest = hashlib.md5(str(seed).encode()).hexdigest()
        assert conversation.outputs() == [f"Code execution result:\n{digest}\n\n"]


def test_every_field_of_the_installed_gke_code_executor_is_ours_with_its_default() -> None:
    """Read from the installed ADK: a field it adds fails here, not in a user's agent."""
    gke = GkeCodeExecutor.model_fields
    ours = QueuedCodeExecutor.model_fields
    assert set(gke) <= set(ours), sorted(set(gke) - set(ours))
    assert {name: ours[name].default for name in gke} == {name: field.default for name, field in gke.items()}
    assert {name: ours[name].annotation for name in gke} == {name: f.annotation for name, f in gke.items()}
    assert {"sandbox_gateway_name", "sandbox_template", "executor_type"} <= set(gke)


@pytest.mark.parametrize(
    ("fields", "placement"),
    [({}, None), ({"executor_type": "job"}, "job"), ({"executor_type": "sandbox"}, "warm")],
)
def test_executor_type_places_the_request(
    client: Client, fields: dict[str, Any], placement: str | None
) -> None:
    executor = QueuedCodeExecutor(client=client, **fields)
    assert executor._runner.request("print(1)").placement == placement  # type: ignore[union-attr]


def test_gke_code_executor_parameters_are_accepted_by_the_same_names(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    executor = QueuedCodeExecutor(
        "/etc/kube.conf",
        namespace="agents",
        image="python:3.11-slim",
        timeout_seconds=20,
        executor_type="job",
        cpu_requested="100m",
        mem_requested="128Mi",
        cpu_limit="1",
        mem_limit="1Gi",
        sandbox_template="python-sandbox-template",
        sandbox_gateway_name="sandbox-gateway",
        client=client,
    )
    assert executor.kubeconfig_path == "/etc/kube.conf"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "namespace='agents'" in warned and "SANDQ_NAMESPACE" in warned
    assert "SANDQ_KUBECONFIG_PATH" in warned and "SANDQ_IMAGE" not in warned
    assert "sandbox_gateway_name='sandbox-gateway'" in warned and "pods/attach" in warned
    assert "SANDQ_SANDBOX_TEMPLATE" not in warned
    QueuedCodeExecutor(client=client, sandbox_template="gpu-template")
    assert "sandbox_template='gpu-template'" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stateful": True}, "every execution runs in a fresh, ephemeral sandbox"),
        ({"executor_type": "pod"}, "executor_type"),
        ({"cpu_requested": "2", "cpu_limit": "1"}, "cpu_requested: 2 exceeds cpu_limit 1"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"redis_url": "redis://elsewhere:6379/0"}, "either client or redis_url/queue"),
        ({"redis_ulr": "redis://typo"}, "redis_ulr"),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    client: Client, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        QueuedCodeExecutor(client=client, **fields)


def test_example_agent_runs_offline_end_to_end(settings: Settings, worker: object) -> None:
    done = run_example("adk_agent.py", settings)
    assert "[sandbox: OUTCOME_OK]" in done.stdout
    assert "The sum of the first 15 Fibonacci numbers is 986;" in done.stdout  # 0 + 1 + ... + 377
    assert "[artifacts] fibonacci.png" in done.stdout
