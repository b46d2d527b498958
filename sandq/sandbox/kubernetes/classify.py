"""Pure functions from Job and Pod status (plain dicts, as the watch delivers them) to an outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandq.contract import SandboxReport, Status

Obj = dict[str, Any]
"""A Kubernetes object as the API serves it (a plain dict: the watch keeps them so)."""

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"

BLOCKING_WAIT_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Container waiting reasons that will not fix themselves in time: infrastructure_error."""

KILLED = 137
TIMED_OUT_EXIT = 124


def _conditions(obj: Obj | None) -> list[Obj]:
    if not obj:
        return []
    return list((obj.get("status") or {}).get("conditions") or [])


def condition(obj: Obj | None, kind: str) -> Obj | None:
    """The condition of type ``kind`` whose status is True, or None."""
    for cond in _conditions(obj):
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def job_finished(job: Obj | None) -> Obj | None:
    """The Job's terminal condition (Complete or Failed), or None while it runs."""
    return condition(job, "Complete") or condition(job, "Failed")


def disrupted(pod: Obj) -> bool:
    """Whether the pod was evicted or preempted (the Job ignores it and makes a new pod)."""
    return condition(pod, "DisruptionTarget") is not None


def pod_phase(pod: Obj) -> str:
    """The pod's phase ("Pending" when unknown)."""
    return str((pod.get("status") or {}).get("phase") or "Pending")


def final_pod(pods: list[Obj]) -> Obj | None:
    """The pod whose end is the execution's end: terminal and not disrupted."""
    for pod in pods:
        if pod_phase(pod) in ("Succeeded", "Failed") and not disrupted(pod):
            return pod
    return None


def container_state(pod: Obj) -> Obj:
    """The runner container's state (``{"waiting": ...}``, ``{"terminated": ...}``, ...)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        return dict(status.get("state") or {})
    return {}


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp (RFC 3339) as a datetime, or None."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def blocked(pod: Obj, now: datetime, unschedulable_seconds: float) -> str | None:
    """Why the pod can never start (image pull, config error, unschedulable too long), or None."""
    waiting = container_state(pod).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in BLOCKING_WAIT_REASONS:
        message = waiting.get("message") or ""
        return f"{reason}: {message}".rstrip(": ")
    scheduled = next((c for c in _conditions(pod) if c.get("type") == "PodScheduled"), None)
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        since = parse_time(scheduled.get("lastTransitionTime")) or parse_time(
            (pod.get("metadata") or {}).get("creationTimestamp")
        )
        if since is not None and (now - since).total_seconds() >= unschedulable_seconds:
            message = scheduled.get("message") or ""
            return f"Unschedulable for {unschedulable_seconds:g}s: {message}".rstrip(": ")
    return None


def pod_index(pod: Obj) -> int | None:
    """The completion index of an Indexed Job's pod (None for other pods)."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION)
    return int(value) if value is not None and str(value).isdigit() else None


def started(pod: Obj | None) -> bool:
    """Whether the pod's container ever started running."""
    if pod is None:
        return False
    state = container_state(pod)
    return "running" in state or "terminated" in state


@dataclass(frozen=True)
class Verdict:
    """How an execution ended according to the cluster, when the runner left no frame."""

    report: SandboxReport | None
    fault: str | None = None


def without_frame(job: Obj | None, pod: Obj | None) -> Verdict:
    """Classify an execution whose pod printed no result frame (it was killed, or never ran).

    OOMKilled → oom_killed; Job DeadlineExceeded → timed_out; SIGKILL without
    a reason → oom_killed (as the local backend does); anything else is an
    infrastructure fault that the task may retry.
    """
    terminated = container_state(pod).get("terminated") or {} if pod else {}
    reason = terminated.get("reason")
    exit_code = terminated.get("exitCode")
    failed = condition(job, "Failed")
    if reason == "OOMKilled":
        return Verdict(
            SandboxReport(
                status=Status.OOM_KILLED, exit_code=KILLED,
                error="the sandbox exceeded its memory limit and was killed",
            )
        )
    pod_reason = ((pod or {}).get("status") or {}).get("reason")
    job_deadline = failed is not None and failed.get("reason") == "DeadlineExceeded"
    if job_deadline or pod_reason == "DeadlineExceeded":
        return Verdict(
            SandboxReport(
                status=Status.TIMED_OUT, exit_code=TIMED_OUT_EXIT,
                error="the Job reached its activeDeadlineSeconds",
            )
        )
    if exit_code == KILLED:
        return Verdict(
            SandboxReport(
                status=Status.OOM_KILLED, exit_code=KILLED,
                error="the sandbox was killed (SIGKILL), most likely by its memory limit",
            )
        )
    why = reason or (failed or {}).get("reason") or "no result"
    return Verdict(None, fault=f"the pod ended without a result ({why}, exit code {exit_code})")
