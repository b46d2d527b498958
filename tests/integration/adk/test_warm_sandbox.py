"""GkeCodeExecutor's sandbox mode, sandq's way: ``executor_type="sandbox"`` runs the agent's code in a
claimed warm sandbox, through ADK's real agent loop, a real worker (Kubernetes backend) and the stand-in
with agent-sandbox and a warm pool of gVisor sandboxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.genai import types

from sandq import Client
from sandq.adk_adapter import QueuedCodeExecutor
from sandq.sandbox.kubernetes.permissions import REQUIRED_PERMISSIONS, WARM_PERMISSIONS
from tests.conftest import RedisServer, WorkerProcess, make_settings
from tests.integration.adk.conftest import converse, python_block, replies
from tests.k8s_harness.env import Env, kubernetes_env

KEEP = ("namespace", "kubeconfig_path", "api_backoff_seconds", "api_timeout_seconds", "watch_timeout_seconds",
        "kill_grace_seconds", "api_qps", "api_burst")


@pytest.fixture(scope="module")
def warm(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Client]]:
    """A worker on the Kubernetes backend whose default is the Job path: only the executor asks for warm."""
    with kubernetes_env(warm_pool=2) as env:
        base: Path = tmp_path_factory.mktemp("adk-warm")
        overrides = {name: getattr(env.settings, name) for name in KEEP}
        settings = make_settings(
            redis_server.url, base, backend="kubernetes", kubernetes_mode="job", **overrides
        )
        client = Client(settings)
        worker = WorkerProcess(settings, base / "worker.log")
        try:
            worker.wait_ready(client)
            yield env, client
        finally:
            worker.stop()
            client.close()


async def test_executor_type_sandbox_runs_the_agents_code_in_a_claimed_warm_sandbox(
    warm: tuple[Env, Client],
) -> None:
    env, client = warm
    executor = QueuedCodeExecutor(
        client=client, executor_type="sandbox", sandbox_template="python-sandbox-template",
        sandbox_gateway_name="sandbox-gateway", timeout_seconds=30, queue_wait_seconds=90,
    )
    code = "import sys\nprint(sum(range(101)))\nprint('checked', file=sys.stderr)"
    conversation = await converse(executor, replies(python_block(code), "The sum is 5050."))

    [output] = conversation.outputs()
    assert output.startswith("Code execution result:\n5050\n"), output
    assert "checked" in output  # stderr of a success shows as a warning, apart from stdout
    assert conversation.outcomes() == [types.Outcome.OUTCOME_OK]
    assert conversation.final_text() == "The sum is 5050."
    verbs = [(c.resource, c.verb) for c in env.calls if c.name is not None]
    assert ("sandboxclaims", "create") in verbs and ("pods/attach", "get") in verbs
    assert ("jobs", "create") not in verbs, "the warm path, not a Job"
    assert {c.permission for c in env.calls} <= REQUIRED_PERMISSIONS | WARM_PERMISSIONS
