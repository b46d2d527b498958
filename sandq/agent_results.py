"""What every agent-framework adapter shares: run code through the queue, tell the agent how it went.

``SandboxRunner`` submits one piece of code and waits a bounded time; it never raises. Every end
becomes an ``Outcome``: what the code printed, how it ended and, when sandq itself stood in the
way (a full queue, an unreachable Redis, no worker, an infrastructure fault, a refused request),
a sentence saying what happened and what to do. Each adapter shows an ``Outcome`` to its model
in its framework's idiom; ``Outcome.as_text`` is the plain-text view most of them use.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict, Unpack

from pydantic import BaseModel, Field, ValidationError

from sandq.broker.errors import SubmissionRefused
from sandq.broker.routing import PRIORITY_VALUES, Priority
from sandq.client.client import RECONNECT_SECONDS, Client, ExecutionHandle, ResultTimeout
from sandq.contract import ExecutionRequest, ExecutionResult, File, Status
from sandq.sandbox.runner import OUTPUTS
from sandq.settings import Settings
from sandq.validation import describe

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_WAIT_SECONDS = 60.0
"""How long an adapter waits for a result beyond the code's own time limit."""

TOOL_NAME = "run_python"
"""The name under which the tool adapters offer the sandbox to a model."""
TOOL_DESCRIPTION = (
    "Run a complete Python 3 program in a fresh, isolated sandbox and get back how it ended (status and "
    "exit code), its stdout and its stderr. Nothing carries over between runs and there is no network, "
    f"so print everything you need to see. Files the program writes to {OUTPUTS}/ come back as output files."
)


class CodeInput(BaseModel):
    """The arguments of the tool adapters: one program."""

    code: str = Field(description="The Python program to run, complete with its imports.")


class SandboxOptions(TypedDict, total=False):
    """Keyword arguments of every adapter. A request field left out takes the contract's default.

    Queue: ``client``, or ``redis_url`` and ``queue`` (else ``SANDQ_REDIS_URL`` and ``SANDQ_QUEUE``).
    Each request: ``timeout_seconds``, ``cpu_requested``, ``mem_requested``, ``cpu_limit``,
    ``mem_limit``, ``max_output_bytes``, ``tenant``, ``labels``, ``placement`` (Kubernetes:
    ``job`` or ``warm``; None, the worker's default) and ``priority`` (``interactive`` by
    default). ``queue_wait_seconds``: how long to wait for a result beyond ``timeout_seconds``
    before giving up and cancelling the execution (60 s by default).
    """

    client: Client | None
    redis_url: str | None
    queue: str | None
    timeout_seconds: int
    cpu_requested: str
    mem_requested: str
    cpu_limit: str
    mem_limit: str
    max_output_bytes: int
    tenant: str
    labels: dict[str, str]
    placement: Literal["job", "warm"] | None
    priority: Priority
    queue_wait_seconds: float


@dataclass(frozen=True)
class Outcome:
    """One run of code as an agent sees it.

    ``status`` is None when sandq has no result to show: nothing was queued, no worker answered
    in time, or the result was lost. ``note`` is sandq's own sentence about what happened and
    what to do; it is empty when the code simply succeeded.
    """

    status: Status | None
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    files: tuple[File, ...] = ()
    note: str = ""
    execution_id: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when the code ran to the end with exit code 0."""
        return self.status is Status.SUCCEEDED

    def headline(self) -> str:
        """``status: ...``: how the run ended, with the exit code when there is one."""
        if self.status is None:
            return "status: no result"
        code = "" if self.exit_code is None else f" (exit code {self.exit_code})"
        return f"status: {self.status.value}{code}"

    def as_text(self, files_went: str = "attached") -> str:
        """The outcome for a model: status, stdout and stderr apart, sandq's note, the output files."""
        parts = [self.headline()]
        for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)):
            if stream:
                parts.append(f"--- {name} ---\n{stream.rstrip()}")
        if self.succeeded and not self.stdout and not self.stderr:
            parts.append("(the code printed nothing)")
        if self.note:
            parts.append(self.note)
        if self.files:
            listed = ", ".join(f"{f.name} ({f.mime_type}, {len(f.content)} bytes)" for f in self.files)
            parts.append(f"output files ({files_went}): {listed}")
        return "\n".join(parts) + "\n"


def refused(reason: str) -> Outcome:
    """The request was invalid: nothing ran."""
    return Outcome(None, note=f"sandq refused the code, so nothing ran: {reason}.")


def describe_error(error: BaseException) -> str:
    """``Type: message`` on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def outcome_of(result: ExecutionResult, timeout_seconds: int, mem_limit: str) -> Outcome:
    """How a finished execution looks to an agent, given the limits it ran under."""
    notes = [_status_note(result, timeout_seconds, mem_limit)]
    if result.output_files_truncated:
        notes.append("sandq: some output files were dropped: they passed the size or count limit.")
    return Outcome(
        result.status,
        stdout=result.stdout,
        stderr=result.stderr,
        exit_code=result.exit_code,
        files=tuple(result.output_files),
        note="\n".join(n for n in notes if n),
        execution_id=result.id,
    )


def _status_note(result: ExecutionResult, timeout_seconds: int, mem_limit: str) -> str:
    """What sandq says about how an execution ended: nothing for a success or a failure with stderr."""
    if result.status is Status.SUCCEEDED or (result.status is Status.FAILED and result.stderr):
        return ""
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
    return f"sandq: {explanation}."


def cancelled(execution_id: str | None, why: str) -> Outcome:
    """The caller cancelled the execution (``why`` says who); sandq stops it."""
    return Outcome(
        Status.CANCELLED, note=f"sandq: the execution was cancelled ({why}).", execution_id=execution_id
    )


def connect(owner: str, client: Client | None, redis_url: str | None, queue: str | None) -> Client:
    """``client``, or a new one on ``redis_url``/``queue`` (else the ``SANDQ_`` settings)."""
    if client is None:
        overrides = {"redis_url": redis_url, "queue": queue}
        return Client(Settings().model_copy(update={k: v for k, v in overrides.items() if v is not None}))
    if redis_url is not None or queue is not None:
        raise ValueError(f"{owner}: pass either client or redis_url/queue, not both")
    return client


_RUNNER_OPTIONS = {"client", "redis_url", "queue", "priority", "queue_wait_seconds", "labels"}
"""The options that are not fields of the request itself."""


class SandboxRunner:
    """Runs code through the sandq queue for an adapter, and never raises: every end is an ``Outcome``.

    Takes the ``SandboxOptions``; ``owner`` names the adapter in configuration errors, which are
    the only errors it raises (``ValueError``, at construction).
    """

    def __init__(self, owner: str, **options: Unpack[SandboxOptions]) -> None:
        self.priority: Priority = options.get("priority", "interactive")
        self.queue_wait_seconds = float(options.get("queue_wait_seconds", DEFAULT_QUEUE_WAIT_SECONDS))
        self.labels = dict(options.get("labels", {}))
        if self.priority not in PRIORITY_VALUES:
            raise ValueError(f"{owner}: priority must be 'interactive' or 'batch', not {self.priority!r}")
        if self.queue_wait_seconds < 0:
            raise ValueError(f"{owner}: queue_wait_seconds must not be negative")
        self._fields = {k: v for k, v in options.items() if k not in _RUNNER_OPTIONS}
        try:
            self.template = self._validated("pass", [], self.labels)
        except ValidationError as error:
            raise ValueError(f"{owner}: {describe(error)}") from None
        self.client = connect(owner, options.get("client"), options.get("redis_url"), options.get("queue"))

    @property
    def wait_seconds(self) -> float:
        """How long a run waits for its result once queued: the time limit, then the queue wait."""
        return self.template.timeout_seconds + self.queue_wait_seconds

    @property
    def longest_seconds(self) -> float:
        """The longest a run can take, Redis reconnects included: a bound for a framework's own timeout."""
        return self.wait_seconds + 2 * RECONNECT_SECONDS + 10

    def request(
        self, code: str, files: Sequence[File] = (), labels: Mapping[str, str] | None = None
    ) -> ExecutionRequest | Outcome:
        """The request for ``code``, or the outcome that refuses it."""
        try:
            return self._validated(code, files, {**self.labels, **(labels or {})})
        except ValidationError as error:
            return refused(describe(error))

    def _validated(self, code: str, files: Sequence[File], labels: Mapping[str, str]) -> ExecutionRequest:
        raw = {**self._fields, "code": code, "input_files": list(files), "labels": dict(labels)}
        return ExecutionRequest.model_validate(raw)

    def run(self, code: str, files: Sequence[File] = (), labels: Mapping[str, str] | None = None) -> Outcome:
        """Run ``code`` and wait for its outcome, blocking."""
        request = self.request(code, files, labels)
        if isinstance(request, Outcome):
            return request
        submitted = self.submit(request, uuid.uuid4().hex)
        if isinstance(submitted, Outcome):
            return submitted
        try:
            result = submitted.result(timeout=self.wait_seconds)
        except Exception as error:
            return self.no_result(submitted, error)
        return self.outcome(result)

    async def run_async(
        self,
        code: str,
        files: Sequence[File] = (),
        labels: Mapping[str, str] | None = None,
        execution_id: str | None = None,
    ) -> Outcome:
        """Run ``code`` and await its outcome. Cancelling the awaiting task cancels the execution."""
        request = self.request(code, files, labels)
        if isinstance(request, Outcome):
            return request
        execution_id = execution_id or uuid.uuid4().hex
        try:
            submitted = await asyncio.to_thread(self.submit, request, execution_id)
            if isinstance(submitted, Outcome):
                return submitted
            try:
                result = await submitted.result_async(timeout=self.wait_seconds)
            except Exception as error:
                return await asyncio.to_thread(self.no_result, submitted, error)
        except asyncio.CancelledError:
            self.cancel(execution_id)
            raise
        return self.outcome(result)

    def submit(self, request: ExecutionRequest, execution_id: str) -> ExecutionHandle | Outcome:
        """Queue ``request``, or the outcome that says why it could not be queued."""
        try:
            return self.client.submit(request, execution_id=execution_id, priority=self.priority)
        except SubmissionRefused as error:
            logger.warning("sandq refused an execution: %s", error)
            return Outcome(
                None,
                note=(
                    f"sandq's queue is full, so nothing ran: {error}. Run the same code again after that "
                    "pause, or tell the user the sandbox is busy."
                ),
            )
        except Exception as error:  # Redis unreachable, or any other fault: the agent run goes on
            logger.warning("sandq could not enqueue an execution", exc_info=True)
            return Outcome(
                None,
                note=(
                    f"sandq could not queue the code, so nothing ran ({describe_error(error)}). "
                    "Try again later; if it persists, ask the operator to run `sandq doctor`."
                ),
            )

    def no_result(self, handle: ExecutionHandle, error: Exception) -> Outcome:
        """The outcome when waiting for ``handle`` failed; a run that timed out is cancelled."""
        if isinstance(error, ResultTimeout):
            logger.warning("no sandq result for %s within %s s; cancelling it", handle.id, self.wait_seconds)
            self.cancel(handle.id)
            note = (
                f"sandq: no result within {self.wait_seconds:g} s (execution {handle.id}): no worker "
                "finished the code in time, so it was cancelled. The workers are down or overloaded: try "
                "again later; if it persists, ask the operator to check that `sandq worker` is running."
            )
        else:
            logger.warning("lost track of sandq execution %s", handle.id, exc_info=error)
            note = (
                f"sandq lost track of execution {handle.id} while waiting for its result "
                f"({describe_error(error)}); it may or may not have run. Try again later."
            )
        return Outcome(None, note=note, execution_id=handle.id)

    def cancel(self, execution_id: str) -> None:
        """Cancel an execution, best effort: its result is not awaited any more."""
        try:
            self.client.cancel(execution_id)
        except Exception:
            logger.warning("could not cancel sandq execution %s", execution_id, exc_info=True)

    def outcome(self, result: ExecutionResult) -> Outcome:
        """How a finished execution looks to the agent."""
        return outcome_of(result, self.template.timeout_seconds, self.template.mem_limit)

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()
