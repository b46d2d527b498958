"""The wire contract: the request and result models every side imports.

Everything that crosses Redis is one of these models, serialized as JSON.
``CONTRACT_VERSION`` changes whenever a field is added or changes meaning; version 2 added
``ExecutionRequest.stream_output`` and ``ExecutionRequest.placement`` (a worker of version 1 rejects
a request that sets either).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    computed_field,
    field_validator,
    model_validator,
)

CONTRACT_VERSION = 2

MAX_CODE_BYTES = 512 * 1024
MAX_INPUT_FILES_BYTES = 768 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
MAX_TIMEOUT_SECONDS = 3600
CONFIGMAP_MAX_BYTES = 1024 * 1024
"""What one Kubernetes ConfigMap holds: its data plus its decoded binaryData (the API server answers 422)."""
SANDBOX_FILES_RESERVE = 64 * 1024
"""Room kept in a sandbox's ConfigMap for sandq's own files: the runner (about 20 KiB) and its spec."""
MAX_SANDBOX_PAYLOAD_BYTES = CONFIGMAP_MAX_BYTES - SANDBOX_FILES_RESERVE
"""Most bytes the code and the input files may take together (one ConfigMap carries them to a pod)."""
INPUT_FILE_OVERHEAD = 64
"""Bytes an input file takes in the runner's spec beside its name (its key and the JSON around it)."""
DEFAULT_TENANT = "default"
"""The tenant of a request that names none (its queue is the base queue)."""

_TENANT_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._ +@=,-]+$")


class Status(StrEnum):
    """How an execution ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    OOM_KILLED = "oom_killed"
    OUTPUT_LIMIT_EXCEEDED = "output_limit_exceeded"
    REJECTED = "rejected"
    INFRASTRUCTURE_ERROR = "infrastructure_error"
    CANCELLED = "cancelled"


def _b64_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    raise ValueError("expected bytes or a base64 string")


Base64Bytes = Annotated[
    bytes,
    PlainValidator(_b64_bytes),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str),
]
"""Bytes carried as base64 text in JSON (never pickle)."""


def check_tenant(tenant: str) -> str:
    """Accept only a tenant slug: lowercase letters, digits and '-', 1 to 63 characters."""
    if not _TENANT_RE.match(tenant):
        raise ValueError("tenant must be a slug: lowercase letters, digits and '-', 1-63 chars")
    return tenant


def check_quantity(value: str) -> str:
    """Reject anything that is not a positive Kubernetes quantity."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 512Mi)") from None
    if amount <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    return value


Quantity = Annotated[str, AfterValidator(check_quantity)]


def check_relative_name(name: str) -> str:
    """Accept only a safe relative path: no absolute path, no '..', no odd bytes."""
    if not name or len(name) > 255:
        raise ValueError("file name must have 1 to 255 characters")
    if name.startswith("/") or "\\" in name:
        raise ValueError(f"file name {name!r} must be a relative path")
    for segment in name.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT_RE.match(segment):
            raise ValueError(f"file name {name!r} has an unsafe path segment {segment!r}")
    return name


class File(BaseModel):
    """A file travelling into or out of a sandbox."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[str, AfterValidator(check_relative_name)]
    content: Base64Bytes
    mime_type: str = "application/octet-stream"


class ExecutionRequest(BaseModel):
    """What a client asks to run. Invalid values fail here, naming the field."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1)
    language: Literal["python"] = "python"
    tenant: str = DEFAULT_TENANT
    timeout_seconds: int = Field(default=300, ge=1, le=MAX_TIMEOUT_SECONDS)
    cpu_requested: Quantity = "200m"
    mem_requested: Quantity = "256Mi"
    cpu_limit: Quantity = "500m"
    mem_limit: Quantity = "512Mi"
    max_output_bytes: int = Field(default=DEFAULT_MAX_OUTPUT_BYTES, ge=1024, le=16 * 1024 * 1024)
    input_files: list[File] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    stream_output: bool = False
    """Publish stdout and stderr while the code runs (``ExecutionHandle.stream``, the gateway's events)."""
    placement: Literal["job", "warm"] | None = None
    """Kubernetes backend only (contract version 2): run as a Job, or in a pre-started sandbox of the
    warm pool (requests of the pool's shape only; others run as a Job). None: the worker's
    ``SANDQ_KUBERNETES_MODE``. The local backend takes a warm sandbox whenever it has one."""

    @field_validator("code")
    @classmethod
    def _code_fits(cls, code: str) -> str:
        size = len(code.encode("utf-8", errors="surrogatepass"))
        if size > MAX_CODE_BYTES:
            raise ValueError(f"code is {size} bytes; the maximum is {MAX_CODE_BYTES}")
        if not code.strip():
            raise ValueError("code is blank")
        try:
            code.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("code is not valid UTF-8") from None
        return code

    @field_validator("tenant")
    @classmethod
    def _tenant_slug(cls, tenant: str) -> str:
        return check_tenant(tenant)

    @field_validator("input_files")
    @classmethod
    def _files_fit(cls, files: list[File]) -> list[File]:
        names = [f.name for f in files]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate input file names: {duplicates}")
        total = sum(len(f.content) for f in files)
        if total > MAX_INPUT_FILES_BYTES:
            raise ValueError(f"input files total {total} bytes; the maximum is {MAX_INPUT_FILES_BYTES}")
        return files

    def wire(self) -> dict[str, object]:
        """The request as it travels to workers (JSON); the version 2 fields (``stream_output``,
        ``placement``) only when set, so that a worker of contract version 1 still takes every request
        that uses neither."""
        unset = {"stream_output"} if not self.stream_output else set()
        if self.placement is None:
            unset.add("placement")
        return self.model_dump(mode="json", exclude=unset or None)

    @model_validator(mode="after")
    def _fits_one_configmap(self) -> ExecutionRequest:
        code = len(self.code.encode("utf-8"))
        files = sum(len(f.content) + len(f.name.encode()) + INPUT_FILE_OVERHEAD for f in self.input_files)
        if code + files > MAX_SANDBOX_PAYLOAD_BYTES:
            raise ValueError(
                f"input_files: with the code ({code} bytes) the input files and their names take "
                f"{code + files} bytes; together they may take at most {MAX_SANDBOX_PAYLOAD_BYTES} "
                "(one 1 MiB ConfigMap carries a sandbox's files)"
            )
        return self

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ExecutionRequest:
        if parse_quantity(self.cpu_requested) > parse_quantity(self.cpu_limit):
            raise ValueError(f"cpu_requested: {self.cpu_requested} exceeds cpu_limit {self.cpu_limit}")
        if parse_quantity(self.mem_requested) > parse_quantity(self.mem_limit):
            raise ValueError(f"mem_requested: {self.mem_requested} exceeds mem_limit {self.mem_limit}")
        return self


class Submission(BaseModel):
    """The message body of one execute task: an id, a time, and the raw request.

    ``request`` stays a plain dict so that a worker can answer an invalid
    request with a ``rejected`` result instead of failing the task.
    """

    version: int = CONTRACT_VERSION
    id: str
    enqueued_at: datetime
    request: dict[str, object]

    @property
    def tenant(self) -> str:
        """The tenant the raw request names (the default tenant if it names none, or not as text)."""
        tenant = self.request.get("tenant")
        return tenant if isinstance(tenant, str) else DEFAULT_TENANT


class SandboxReport(BaseModel):
    """How a sandbox ended and what came out of it: what a backend reports for one run."""

    status: Status
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    output_files: list[File] = Field(default_factory=list)
    output_files_truncated: bool = False
    sandbox_name: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class ExecutionResult(SandboxReport):
    """How one execution ended, with everything it printed and wrote."""

    version: int = CONTRACT_VERSION
    id: str
    attempts: int = 1
    backend: str = ""
    tenant: str = DEFAULT_TENANT
    enqueued_at: datetime | None = None

    @classmethod
    def rejected(cls, execution_id: str, reason: str, **fields: object) -> ExecutionResult:
        """The result of a request refused before any sandbox started: nothing ran."""
        return cls._ended(execution_id, Status.REJECTED, reason, attempts=0, **fields)

    @classmethod
    def cancelled(cls, execution_id: str, reason: str, **fields: object) -> ExecutionResult:
        """The result of an execution cancelled before it started (``attempts`` 0)."""
        return cls._ended(execution_id, Status.CANCELLED, reason, attempts=0, **fields)

    @classmethod
    def infrastructure_error(cls, execution_id: str, reason: str, **fields: object) -> ExecutionResult:
        """The result of an execution the sandbox system could not carry out (not the code's fault)."""
        error = f"the sandbox system failed, not your code ({reason}); retrying later may help"
        return cls._ended(execution_id, Status.INFRASTRUCTURE_ERROR, error, **fields)

    @classmethod
    def _ended(cls, execution_id: str, status: Status, error: str, **fields: object) -> ExecutionResult:
        values: dict[str, object] = {"finished_at": now(), **fields}
        return cls.model_validate({"id": execution_id, "status": status, "error": error, **values})

    @computed_field  # type: ignore[prop-decorator]
    @property
    def queue_seconds(self) -> float | None:
        """Seconds between enqueueing and the sandbox starting."""
        return _seconds_between(self.enqueued_at, self.started_at)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def run_seconds(self) -> float | None:
        """Seconds the sandbox ran."""
        return _seconds_between(self.started_at, self.finished_at)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
