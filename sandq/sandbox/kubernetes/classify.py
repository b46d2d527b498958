"""Pure functions from Job and Pod status (plain dicts, as the watch delivers them) to an outcome.

The runner's report, when the pod's log holds it, says how the code ended. Without it the
cluster's status decides, and only with evidence (docs/kubernetes.md has the whole table):

* no code ran (no pod, never scheduled, an image that would not pull, stopped before its
  container started): a fault to retry, the code runs for the first time on the next try;
* ``OOMKilled``, or gVisor's ``Error``/128 (a sandbox the host's memory cgroup killed): oom_killed;
* a deadline (the pod's or the Job's ``DeadlineExceeded``, the Job's ``FailureTarget``) after the
  code had its whole timeout: timed_out;
* a kubelet eviction without ``DisruptionTarget`` (the sandbox's own storage): failed;
* a SIGKILL with no such sign (the program killed its runner): failed, exit 137;
* anything else after the code started (deleted, lost by the runtime, report missing): a final
  infrastructure error, never retried, for the code may have run to its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandq.contract import SandboxReport, Status

Obj = dict[str, Any]
"""A Kubernetes object as the API serves it (a plain dict: the watch keeps them so)."""

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
RAN = "ran"
"""Key the watch sets on a pod once it has seen its container start (it stays through later states)."""
GONE = "gone"
"""Key the watch sets on a pod it saw deleted, whose last state it keeps while someone waits on it."""

PERMANENT_WAIT_REASONS = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)
"""Container waiting reasons that will not fix themselves."""
PULL_WAIT_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff"})
"""Image pulls that fail; often briefly (a registry's 429 or 5xx), and the kubelet retries them."""

KILLED = 137
SANDBOX_KILLED = 128
"""gVisor's exit status of a sandbox that the host killed, as GKE reports an OOM kill on some
versions (gVisor issue 2433, PR 14679); the runner itself never exits 128."""
DEADLINE = "DeadlineExceeded"
SLACK_SECONDS = 1.0
"""Timestamps of container states have whole seconds."""


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


def job_ending(job: Obj | None) -> Obj | None:
    """The condition saying the Job ends: terminal, or ``FailureTarget``/``SuccessCriteriaMet``, which
    Kubernetes 1.31+ sets first while it stops the Job's pods."""
    return job_finished(job) or condition(job, "FailureTarget") or condition(job, "SuccessCriteriaMet")


def disrupted(pod: Obj) -> bool:
    """Whether the pod was evicted or preempted (the Job ignores it and makes a new pod)."""
    return condition(pod, "DisruptionTarget") is not None


def pod_phase(pod: Obj) -> str:
    """The pod's phase ("Pending" when unknown)."""
    return str((pod.get("status") or {}).get("phase") or "Pending")


def deleted(pod: Obj) -> bool:
    """Whether someone deleted the pod (it has a ``deletionTimestamp``, or is gone)."""
    return bool(pod.get(GONE) or (pod.get("metadata") or {}).get("deletionTimestamp"))


def ended(pod: Obj) -> bool:
    """Whether the pod is over: terminal, or gone."""
    return bool(pod.get(GONE)) or pod_phase(pod) in ("Succeeded", "Failed")


def final_pod(pods: list[Obj]) -> Obj | None:
    """The pod whose end is the execution's end: over and not disrupted."""
    for pod in pods:
        if ended(pod) and not disrupted(pod):
            return pod
    return None


def uid(pod: Obj) -> str:
    """The pod's uid (its name if it has none)."""
    meta = pod.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name") or "")


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


def _waiting(pod: Obj) -> tuple[str, str]:
    waiting = container_state(pod).get("waiting") or {}
    return str(waiting.get("reason") or ""), str(waiting.get("message") or "")


def blocked(pod: Obj, now: datetime, unschedulable_seconds: float) -> str | None:
    """Why the pod can never start (a permanent config error, unschedulable too long), or None."""
    reason, message = _waiting(pod)
    if reason in PERMANENT_WAIT_REASONS:
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


def pull_trouble(pod: Obj) -> str | None:
    """The failing image pull the kubelet is retrying (``ErrImagePull: ...``), or None."""
    reason, message = _waiting(pod)
    return f"{reason}: {message}".rstrip(": ") if reason in PULL_WAIT_REASONS else None


def pod_index(pod: Obj) -> int | None:
    """The completion index of an Indexed Job's pod (None for other pods)."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION)
    return int(value) if value is not None and str(value).isdigit() else None


def started(pod: Obj | None) -> bool:
    """Whether the pod's container ever started: from then on the code may have run."""
    if pod is None:
        return False
    state = container_state(pod)
    terminated = state.get("terminated") or {}
    return bool(pod.get(RAN) or "running" in state or terminated.get("startedAt"))


def deadline_passed(job: Obj | None, pod: Obj | None) -> bool:
    """Whether a deadline stopped the pod: its own (the kubelet's), or its Job's (Kubernetes 1.31+
    sets ``FailureTarget`` first, deletes the pods, and sets ``Failed`` once they are gone)."""
    if pod is not None and (pod.get("status") or {}).get("reason") == DEADLINE:
        return True
    return any((condition(job, kind) or {}).get("reason") == DEADLINE for kind in ("FailureTarget", "Failed"))


def _ran_seconds(terminated: Obj) -> float | None:
    begin, end = parse_time(terminated.get("startedAt")), parse_time(terminated.get("finishedAt"))
    return (end - begin).total_seconds() if begin and end else None


def _never_ran(job: Obj | None, pod: Obj | None) -> str:
    """Why an execution whose code never started ended."""
    if pod is None:
        return "its Job ended without a pod" if job_ending(job) else "no pod"
    phase = pod_phase(pod)
    reason = (pod.get("status") or {}).get("reason") or _waiting(pod)[0] or phase
    when = "at a deadline" if deadline_passed(job, pod) else "deleted" if deleted(pod) else "ended"
    return f"the sandbox pod was {when} before its code started ({reason})"


@dataclass(frozen=True)
class Verdict:
    """How an execution ended according to the cluster, when the runner left no report.

    Exactly one is set: ``report`` (a status sandq can stand by), ``retry`` (no code ran: an
    infrastructure fault to retry), or ``fault`` (the code may have run: a final infrastructure
    error, never retried).
    """

    report: SandboxReport | None = None
    retry: str | None = None
    fault: str | None = None


def _killed(status: Status, error: str) -> Verdict:
    return Verdict(SandboxReport(status=status, exit_code=KILLED, error=error))


def without_frame(job: Obj | None, pod: Obj | None, timeout_seconds: int) -> Verdict:
    """Classify an execution whose pod left no report (see the module's docstring)."""
    if pod is None or not started(pod):
        return Verdict(retry=f"no code ran: {_never_ran(job, pod)}")
    terminated = container_state(pod).get("terminated") or {}
    reason, code = terminated.get("reason"), terminated.get("exitCode")
    status = pod.get("status") or {}
    if reason == "OOMKilled":
        return _killed(Status.OOM_KILLED, "the sandbox exceeded its memory limit and was killed")
    if deadline_passed(job, pod):
        ran = _ran_seconds(terminated)
        if ran is not None and ran + SLACK_SECONDS < timeout_seconds:
            return Verdict(fault=f"a cluster deadline stopped the code after {ran:g} s of its "
                                 f"{timeout_seconds} s (its pod started late)")
        return _killed(Status.TIMED_OUT, "still running at the cluster's deadline (activeDeadlineSeconds); "
                                         "what it printed was lost with its runner")
    if deleted(pod):
        return Verdict(fault="the sandbox pod was deleted while the code ran")
    if status.get("reason") == "Evicted":
        message = status.get("message") or "its local storage"
        return _killed(Status.FAILED, f"the kubelet evicted the sandbox: {message}")
    if reason == "Error" and code == SANDBOX_KILLED:
        return _killed(Status.OOM_KILLED, "the sandbox was killed by the host (gVisor's exit 128): "
                                          "it exceeded its memory limit")
    if reason == "ContainerStatusUnknown":
        return Verdict(fault=f"the container runtime lost the sandbox after its code started "
                             f"({reason}: {terminated.get('message') or 'no message'})")
    if code == KILLED:
        return _killed(Status.FAILED, "killed by SIGKILL without a report and with no sign of the memory "
                                      "limit: the program killed its runner (or exceeded mem_limit on a "
                                      "runtime that does not report OOMKilled)")
    if code == 0:
        return Verdict(fault="the runner finished but its report is not in the pod's log (cut or rotated)")
    return Verdict(fault=f"the pod ended without a report ({reason}, exit code {code})")


def backstop(pods: list[Obj]) -> Verdict:
    """The verdict on an execution whose Job the cluster never stopped, and sandq deleted itself."""
    if any(started(p) for p in pods if not disrupted(p)):
        return _killed(Status.TIMED_OUT, "the cluster did not stop the Job at its deadline; sandq deleted it")
    return Verdict(retry="no code ran: the sandbox pod never started, and sandq deleted its Job")
