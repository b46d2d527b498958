"""``QueuedCodeExecutor``: ADK's ``GkeCodeExecutor`` interface, executions through the sandq queue."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Literal

from google.adk.agents.invocation_context import InvocationContext
from google.adk.code_executors.base_code_executor import BaseCodeExecutor
from google.adk.code_executors.code_execution_utils import (
    CodeExecutionInput,
    CodeExecutionResult,
)
from google.adk.code_executors.code_execution_utils import File as AdkFile
from pydantic import ConfigDict, Field, PrivateAttr, field_validator
from typing_extensions import override

from sandq.agent_results import DEFAULT_QUEUE_WAIT_SECONDS, Outcome, SandboxRunner, outcome_of
from sandq.client.client import Client
from sandq.contract import DEFAULT_TENANT, ExecutionResult, File, Status

logger = logging.getLogger(__name__)

WARNINGS_MARKER = "--- warnings (stderr) ---"
"""Separates a successful run's stdout from what it wrote to stderr."""
STDOUT_MARKER = "--- output (stdout) ---"
ERROR_MARKER = "--- error (stderr) ---"
"""A failed run's stderr repeats its stdout between these: ADK shows the model only stderr then."""

# GkeCodeExecutor's defaults for the settings that sandq workers own.
_WORKER_SIDE_DEFAULTS: dict[str, str | None] = {
    "namespace": "default",
    "image": "python:3.11-slim",
    "kubeconfig_path": None,
    "kubeconfig_context": None,
    "sandbox_template": "python-sandbox-template",
}
_WORKER_SIDE_VARIABLES = {
    "namespace": "SANDQ_NAMESPACE",
    "image": "SANDQ_IMAGE",
    "kubeconfig_path": "SANDQ_KUBECONFIG_PATH",
    "kubeconfig_context": "SANDQ_KUBECONFIG_CONTEXT",
    "sandbox_template": "SANDQ_SANDBOX_TEMPLATE",
}
_PLACEMENTS: dict[str, Literal["job", "warm"]] = {"job": "job", "sandbox": "warm"}
"""GkeCodeExecutor's ``executor_type`` as sandq's request placement."""


class QueuedCodeExecutor(BaseCodeExecutor):
    """A drop-in for ADK's ``GkeCodeExecutor`` that runs code through the sandq queue.

    Every constructor parameter of ``GkeCodeExecutor`` is accepted by the same
    name and default. ``timeout_seconds`` and the cpu/mem requests and limits
    travel with each request. ``namespace``, ``image``, ``kubeconfig_path``,
    ``kubeconfig_context`` and ``sandbox_template`` belong to the workers
    (``SANDQ_NAMESPACE``, ``SANDQ_IMAGE``, ``SANDQ_KUBECONFIG_PATH``,
    ``SANDQ_KUBECONFIG_CONTEXT``, ``SANDQ_SANDBOX_TEMPLATE``): they are accepted
    here for compatibility only, and a warning is logged when they differ from
    the defaults.

    ``executor_type`` places each request on a Kubernetes worker: ``"sandbox"``
    in a pre-started sandbox claimed from agent-sandbox's warm pool (sandq's
    warm path), ``"job"`` in a Job of its own; left out, the worker's
    ``SANDQ_KUBERNETES_MODE`` decides. The local backend ignores it.
    ``sandbox_gateway_name`` is accepted and unused: sandq hands code to a warm
    sandbox through the API server (``pods/attach``), with no gateway or router.

    Queue parameters: ``redis_url`` and ``queue`` (else ``SANDQ_REDIS_URL`` and
    ``SANDQ_QUEUE``) or a ready ``client``; ``tenant``; ``labels`` added to every
    request; ``queue_wait_seconds``, how long to wait for a result beyond
    ``timeout_seconds``.

    ``execute_code`` never raises: a full queue, an unreachable Redis, no worker
    answering or an infrastructure fault each come back as a result whose
    stderr says what happened. Every execution is ephemeral, so ``stateful``
    must stay False (GkeCodeExecutor's sandbox mode, too, claims a fresh sandbox
    for each code block and deletes it afterwards). ADK asks the model for fenced code blocks only when
    ``optimize_data_file`` is on; otherwise tell it so in the agent's
    instruction.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    # GkeCodeExecutor's parameters.
    namespace: str = "default"
    image: str = "python:3.11-slim"
    timeout_seconds: int = 300
    executor_type: Literal["job", "sandbox"] = "job"
    cpu_requested: str = "200m"
    mem_requested: str = "256Mi"
    cpu_limit: str = "500m"
    mem_limit: str = "512Mi"
    kubeconfig_path: str | None = None
    kubeconfig_context: str | None = None
    sandbox_gateway_name: str | None = None
    sandbox_template: str | None = "python-sandbox-template"

    # The queue's own parameters.
    redis_url: str | None = None
    queue: str | None = None
    client: Client | None = Field(default=None, exclude=True)
    tenant: str = DEFAULT_TENANT
    labels: dict[str, str] = Field(default_factory=dict)
    queue_wait_seconds: float = Field(default=DEFAULT_QUEUE_WAIT_SECONDS, ge=0)

    _runner: SandboxRunner = PrivateAttr()

    def __init__(
        self,
        kubeconfig_path: str | None = None,
        kubeconfig_context: str | None = None,
        **data: Any,
    ) -> None:
        """Same signature as ``GkeCodeExecutor``; see the class docstring for the parameters."""
        super().__init__(kubeconfig_path=kubeconfig_path, kubeconfig_context=kubeconfig_context, **data)

    @field_validator("stateful")
    @classmethod
    def _refuse_stateful(cls, stateful: bool) -> bool:
        if stateful:
            raise ValueError(
                "QueuedCodeExecutor cannot be stateful: every execution runs in a fresh, "
                "ephemeral sandbox, so no variable or file survives from one code block to the next"
            )
        return stateful

    @override
    def model_post_init(self, context: Any, /) -> None:
        """Check the request fields now, connect the client, warn about worker-side settings."""
        self._runner = SandboxRunner(
            "QueuedCodeExecutor",
            client=self.client,
            redis_url=self.redis_url,
            queue=self.queue,
            timeout_seconds=self.timeout_seconds,
            cpu_requested=self.cpu_requested,
            mem_requested=self.mem_requested,
            cpu_limit=self.cpu_limit,
            mem_limit=self.mem_limit,
            tenant=self.tenant,
            labels=self.labels,
            queue_wait_seconds=self.queue_wait_seconds,
            placement=_PLACEMENTS[self.executor_type] if "executor_type" in self.model_fields_set else None,
        )
        self.client = self._runner.client
        for name, default in _WORKER_SIDE_DEFAULTS.items():
            value = getattr(self, name)
            if value != default:
                logger.warning(
                    "QueuedCodeExecutor ignores %s=%r: sandq workers choose it (set %s on the workers)",
                    name,
                    value,
                    _WORKER_SIDE_VARIABLES[name],
                )
        if self.sandbox_gateway_name is not None:
            logger.warning(
                "QueuedCodeExecutor ignores sandbox_gateway_name=%r: sandq hands code to warm sandboxes "
                "through the Kubernetes API server (pods/attach), with no gateway or router",
                self.sandbox_gateway_name,
            )

    @override
    def execute_code(
        self,
        invocation_context: InvocationContext,
        code_execution_input: CodeExecutionInput,
    ) -> CodeExecutionResult:
        """Run the code in a sandq sandbox and wait for the result; never raises."""
        labels = {"adk.invocation_id": invocation_context.invocation_id}
        if invocation_context.agent is not None:
            labels["adk.agent"] = invocation_context.agent.name
        files = [_to_sandq_file(f) for f in code_execution_input.input_files]
        return _as_code_execution_result(self._runner.run(code_execution_input.code, files, labels))


def _to_sandq_file(file: AdkFile) -> File:
    """ADK's ``File`` (bytes, or base64 text as ADK stores it) as a sandq ``File``."""
    if isinstance(file.content, bytes):
        content = file.content
    else:
        try:
            content = base64.b64decode(file.content, validate=True)
        except binascii.Error:
            content = file.content.encode("utf-8")  # plain text, not base64
    return File(name=file.name, content=content, mime_type=file.mime_type)


def to_code_execution_result(
    result: ExecutionResult, timeout_seconds: int, mem_limit: str
) -> CodeExecutionResult:
    """ADK's view of a sandq result: stderr is non-empty exactly when the run failed."""
    return _as_code_execution_result(outcome_of(result, timeout_seconds, mem_limit))


def _as_code_execution_result(outcome: Outcome) -> CodeExecutionResult:
    files = [AdkFile(name=f.name, content=f.content, mime_type=f.mime_type) for f in outcome.files]
    if outcome.status is None:  # nothing to show but sandq's note
        return CodeExecutionResult(stderr=outcome.note)
    if outcome.status is Status.SUCCEEDED:
        warnings = "".join(part + "\n" for part in [outcome.stderr.rstrip("\n"), outcome.note] if part)
        stdout = outcome.stdout
        if warnings:
            separator = "" if not stdout or stdout.endswith("\n") else "\n"
            stdout = f"{stdout}{separator}{WARNINGS_MARKER}\n{warnings}"
        return CodeExecutionResult(stdout=stdout, output_files=files, exit_code=0)
    stderr = "\n".join(part for part in [outcome.stderr.rstrip("\n"), outcome.note] if part) + "\n"
    if outcome.stdout:
        separator = "" if outcome.stdout.endswith("\n") else "\n"
        stderr = f"{STDOUT_MARKER}\n{outcome.stdout}{separator}{ERROR_MARKER}\n{stderr}"
    return CodeExecutionResult(
        stdout=outcome.stdout, stderr=stderr, output_files=files, exit_code=outcome.exit_code
    )
