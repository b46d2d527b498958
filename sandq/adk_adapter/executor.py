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
from pydantic import ConfigDict, Field, ValidationError, field_validator
from typing_extensions import override

from sandq.broker.errors import SubmissionRefused
from sandq.client.client import Client, ExecutionHandle, ResultTimeout
from sandq.contract import DEFAULT_TENANT, ExecutionRequest, ExecutionResult, File, Status
from sandq.settings import Settings
from sandq.validation import RequestRejected, describe

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
}
_WORKER_SIDE_VARIABLES = {
    "namespace": "SANDQ_NAMESPACE",
    "image": "SANDQ_IMAGE",
    "kubeconfig_path": "SANDQ_KUBECONFIG_PATH",
    "kubeconfig_context": "SANDQ_KUBECONFIG_CONTEXT",
}


class QueuedCodeExecutor(BaseCodeExecutor):
    """A drop-in for ADK's ``GkeCodeExecutor`` that runs code through the sandq queue.

    Every constructor parameter of ``GkeCodeExecutor`` is accepted by the same
    name and default. ``timeout_seconds`` and the cpu/mem requests and limits
    travel with each request. ``namespace``, ``image``, ``kubeconfig_path`` and
    ``kubeconfig_context`` belong to the workers (``SANDQ_NAMESPACE``,
    ``SANDQ_IMAGE``, ``SANDQ_KUBECONFIG_PATH``, ``SANDQ_KUBECONFIG_CONTEXT``):
    they are accepted here for compatibility only, and a warning is logged when
    they differ from the defaults.

    Queue parameters: ``redis_url`` and ``queue`` (else ``SANDQ_REDIS_URL`` and
    ``SANDQ_QUEUE``) or a ready ``client``; ``tenant``; ``labels`` added to every
    request; ``queue_wait_seconds``, how long to wait for a result beyond
    ``timeout_seconds``.

    ``execute_code`` never raises: a full queue, an unreachable Redis, no worker
    answering or an infrastructure fault each come back as a result whose
    stderr says what happened. Every execution is ephemeral, so ``stateful``
    must stay False. ADK asks the model for fenced code blocks only when
    ``optimize_data_file`` is on; otherwise tell it so in the agent's
    instruction.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    # GkeCodeExecutor's parameters.
    namespace: str = "default"
    image: str = "python:3.11-slim"
    timeout_seconds: int = 300
    executor_type: Literal["job"] = "job"
    cpu_requested: str = "200m"
    mem_requested: str = "256Mi"
    cpu_limit: str = "500m"
    mem_limit: str = "512Mi"
    kubeconfig_path: str | None = None
    kubeconfig_context: str | None = None

    # The queue's own parameters.
    redis_url: str | None = None
    queue: str | None = None
    client: Client | None = Field(default=None, exclude=True)
    tenant: str = DEFAULT_TENANT
    labels: dict[str, str] = Field(default_factory=dict)
    queue_wait_seconds: float = Field(default=60.0, ge=0)

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

    @field_validator("executor_type", mode="before")
    @classmethod
    def _only_job(cls, executor_type: object) -> object:
        if executor_type != "job":
            raise ValueError(
                f"executor_type {executor_type!r} is not supported: sandq runs every execution "
                "in its own gVisor sandbox, like GkeCodeExecutor's 'job' mode"
            )
        return executor_type

    @override
    def model_post_init(self, context: Any, /) -> None:
        """Check the request fields now, connect the client, warn about worker-side settings."""
        try:
            self._request_for("pass", [], {})
        except ValidationError as error:
            raise ValueError(f"QueuedCodeExecutor: {describe(error)}") from None
        if self.client is None:
            overrides = {"redis_url": self.redis_url, "queue": self.queue}
            settings = Settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
            self.client = Client(settings)
        elif self.redis_url is not None or self.queue is not None:
            raise ValueError("QueuedCodeExecutor: pass either client or redis_url/queue, not both")
        for name, default in _WORKER_SIDE_DEFAULTS.items():
            value = getattr(self, name)
            if value != default:
                logger.warning(
                    "QueuedCodeExecutor ignores %s=%r: sandq workers choose it (set %s on the workers)",
                    name,
                    value,
                    _WORKER_SIDE_VARIABLES[name],
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
        try:
            request = self._request_for(
                code_execution_input.code,
                [_to_sandq_file(f) for f in code_execution_input.input_files],
                labels,
            )
        except ValidationError as error:
            return _refused(describe(error))
        return self._submit_and_wait(request)

    def _request_for(self, code: str, files: list[File], labels: dict[str, str]) -> ExecutionRequest:
        return ExecutionRequest(
            code=code,
            tenant=self.tenant,
            timeout_seconds=self.timeout_seconds,
            cpu_requested=self.cpu_requested,
            mem_requested=self.mem_requested,
            cpu_limit=self.cpu_limit,
            mem_limit=self.mem_limit,
            input_files=files,
            labels={**self.labels, **labels},
        )

    def _submit_and_wait(self, request: ExecutionRequest) -> CodeExecutionResult:
        client = self.client
        assert client is not None  # set in model_post_init
        try:
            handle = client.submit(request)
        except RequestRejected as error:
            return _refused(str(error))
        except SubmissionRefused as error:
            logger.warning("sandq refused an execution: %s", error)
            return CodeExecutionResult(
                stderr=(
                    f"sandq's queue is full, so nothing ran: {error}. Run the same code again after that "
                    "pause, or tell the user the sandbox is busy."
                )
            )
        except Exception as error:  # Redis unreachable, or any other fault: the agent run goes on
            logger.warning("sandq could not enqueue an execution", exc_info=True)
            return CodeExecutionResult(
                stderr=(
                    f"sandq could not queue the code, so nothing ran ({_describe(error)}). "
                    "Try again later; if it persists, ask the operator to run `sandq doctor`."
                )
            )
        wait = self.timeout_seconds + self.queue_wait_seconds
        try:
            result = handle.result(timeout=wait)
        except ResultTimeout:
            logger.warning("no sandq result for %s within %s s; cancelling it", handle.id, wait)
            self._cancel(handle)
            return CodeExecutionResult(
                stderr=(
                    f"sandq: no result within {wait:g} s (execution {handle.id}): no worker finished the "
                    "code in time, so it was cancelled. The workers are down or overloaded: try again "
                    "later; if it persists, ask the operator to check that `sandq worker` is running."
                )
            )
        except Exception as error:
            logger.warning("lost track of sandq execution %s", handle.id, exc_info=True)
            return CodeExecutionResult(
                stderr=(
                    f"sandq lost track of execution {handle.id} while waiting for its result "
                    f"({_describe(error)}); it may or may not have run. Try again later."
                )
            )
        return to_code_execution_result(result, self.timeout_seconds, self.mem_limit)

    @staticmethod
    def _cancel(handle: ExecutionHandle) -> None:
        try:
            handle.cancel()
        except Exception:  # best effort: its result is ignored either way
            logger.warning("could not cancel sandq execution %s", handle.id, exc_info=True)


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


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _refused(reason: str) -> CodeExecutionResult:
    return CodeExecutionResult(stderr=f"sandq refused the code, so nothing ran: {reason}.")


def to_code_execution_result(
    result: ExecutionResult, timeout_seconds: int, mem_limit: str
) -> CodeExecutionResult:
    """ADK's view of a sandq result: stderr is non-empty exactly when the run failed."""
    files = [AdkFile(name=f.name, content=f.content, mime_type=f.mime_type) for f in result.output_files]
    notes = []
    if result.output_files_truncated:
        notes.append("sandq: some output files were dropped: they passed the size or count limit.")
    if result.status is Status.SUCCEEDED:
        warnings = "".join(part + "\n" for part in [result.stderr.rstrip("\n"), *notes] if part)
        stdout = result.stdout
        if warnings:
            separator = "" if not stdout or stdout.endswith("\n") else "\n"
            stdout = f"{stdout}{separator}{WARNINGS_MARKER}\n{warnings}"
        return CodeExecutionResult(stdout=stdout, output_files=files, exit_code=0)
    explanation = {
        Status.FAILED: f"the code exited with status {result.exit_code}",
        Status.TIMED_OUT: (
            f"the code was stopped after its time limit of {timeout_seconds} s; output up to then is kept. "
            "Make it faster or work on less data"
        ),
        Status.OOM_KILLED: (
            f"the code was killed for using more than its memory limit of {mem_limit}. "
            "Use less memory, e.g. process the data in chunks"
        ),
        Status.OUTPUT_LIMIT_EXCEEDED: (
            "the code was stopped for printing too much; output is cut at the limit. Print a summary instead"
        ),
        Status.REJECTED: f"the request was refused, so nothing ran: {result.error}",
        Status.INFRASTRUCTURE_ERROR: (
            f"the sandbox system failed, not the code: {result.error}. Running the same code again may work"
        ),
        Status.CANCELLED: "the execution was cancelled before it finished",
    }[result.status]
    stderr_parts = [result.stderr.rstrip("\n")] if result.stderr else []
    if result.status is not Status.FAILED or not result.stderr:
        stderr_parts.append(f"sandq: {explanation}.")
    stderr = "\n".join(stderr_parts + notes) + "\n"
    if result.stdout:
        separator = "" if result.stdout.endswith("\n") else "\n"
        stderr = f"{STDOUT_MARKER}\n{result.stdout}{separator}{ERROR_MARKER}\n{stderr}"
    return CodeExecutionResult(
        stdout=result.stdout, stderr=stderr, output_files=files, exit_code=result.exit_code
    )
