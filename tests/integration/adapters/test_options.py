"""Every adapter takes the request parameters as constructor arguments, defaulting to the contract's."""

from __future__ import annotations

from typing import Any

import pytest

from sandq import Client, ExecutionRequest
from sandq.agent_results import SandboxRunner
from sandq.autogen_adapter import QueuedCodeExecutor
from sandq.langchain_adapter import QueuedPythonTool as LangChainTool
from sandq.openai_agents_adapter import QueuedPythonTool as OpenAIAgentsTool
from sandq.pydantic_ai_adapter import QueuedPythonTool as PydanticAITool

ADAPTERS = [LangChainTool, OpenAIAgentsTool, PydanticAITool, QueuedCodeExecutor]


def runner_of(adapter: Any) -> SandboxRunner:
    runner = adapter.runner
    assert isinstance(runner, SandboxRunner)
    return runner


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_left_out_request_fields_take_the_contracts_defaults(adapter: Any, client: Client) -> None:
    runner = runner_of(adapter(client=client))

    assert runner.template == ExecutionRequest(code="pass")
    assert (runner.priority, runner.queue_wait_seconds, runner.client) == ("interactive", 60.0, client)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_every_request_parameter_is_a_constructor_argument(adapter: Any, client: Client) -> None:
    options = {
        "timeout_seconds": 20,
        "cpu_requested": "100m",
        "mem_requested": "128Mi",
        "cpu_limit": "1",
        "mem_limit": "1Gi",
        "max_output_bytes": 4096,
        "tenant": "team-a",
        "labels": {"app": "qa"},
    }
    runner = runner_of(adapter(client=client, priority="batch", queue_wait_seconds=5, **options))

    request = runner.request("print(1)")
    assert request == ExecutionRequest(code="print(1)", **options)
    assert (runner.priority, runner.wait_seconds) == ("batch", 25)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cpu_requested": "2", "cpu_limit": "1"}, "cpu_requested: 2 exceeds cpu_limit 1"),
        ({"timeout_seconds": 0}, "timeout_seconds: Input should be greater than or equal to 1"),
        ({"tenant": "Team A"}, "tenant must be a slug"),
        ({"priority": "urgent"}, "priority must be 'interactive' or 'batch', not 'urgent'"),
        ({"queue_wait_seconds": -1}, "queue_wait_seconds must not be negative"),
        ({"redis_url": "redis://elsewhere:6379/0"}, "pass either client or redis_url/queue, not both"),
        ({"redis_ulr": "redis://typo"}, "redis_ulr: Extra inputs are not permitted"),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    adapter: Any, fields: dict[str, Any], message: str, client: Client
) -> None:
    with pytest.raises(ValueError, match=f"^{adapter.__name__}: .*{message}"):
        adapter(client=client, **fields)
