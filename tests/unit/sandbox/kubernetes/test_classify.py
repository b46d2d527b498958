"""Classification without a report, fed the status shapes a real Kubernetes 1.31+ (GKE, gVisor) writes.

Each shape is the one the job controller, the kubelet, the eviction manager or GKE's gVisor shim
produces (issue 13); the integration tests make the stand-in produce them for real.
"""

from __future__ import annotations

from typing import Any

import pytest

from sandq.contract import Status
from sandq.sandbox.kubernetes import classify
from sandq.sandbox.kubernetes.classify import Verdict, without_frame

TIMEOUT = 10
UNKNOWN = {"reason": "ContainerStatusUnknown", "exitCode": 137,
           "message": "The container could not be located when the pod was terminated"}


def _job(*conditions: tuple[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "sq-x", "uid": "j"}, "status": {"conditions": [
        {"type": kind, "status": "True", "reason": reason} for kind, reason in conditions]}}


def _pod(terminated: dict[str, Any] | None, *, ran_for: int | None = TIMEOUT + 2, deleted: bool = False,
         **status: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
    if terminated is not None:
        times = {} if ran_for is None else {"startedAt": "2025-01-01T00:00:00Z",
                                            "finishedAt": f"2025-01-01T00:00:{ran_for:02d}Z"}
        state = {"terminated": {**times, **terminated}}
    meta: dict[str, Any] = {"name": "sq-x-abcde", "uid": "p"}
    if deleted:
        meta["deletionTimestamp"] = "2025-01-01T00:00:13Z"
        meta["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    return {"metadata": meta, "status": {"phase": "Failed", **status,
                                         "containerStatuses": [{"name": "runner", "state": state}]}}


ERROR_137 = {"reason": "Error", "exitCode": 137}
DEADLINE_SEQUENCE = _job(("FailureTarget", "DeadlineExceeded"))


def _status(verdict: Verdict) -> Status | str:
    if verdict.report is not None:
        return verdict.report.status
    return "retry" if verdict.retry else "final infrastructure_error"


@pytest.mark.parametrize(
    ("job", "pod", "expected"),
    [
        # 1. The Job's deadline on 1.31+: FailureTarget first, the pod deleted under its finalizer,
        #    Error/137 with no pod reason; Failed only later. The code had its whole timeout.
        (DEADLINE_SEQUENCE, _pod(ERROR_137, deleted=True), Status.TIMED_OUT),
        (_job(("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")),
         _pod(ERROR_137, deleted=True), Status.TIMED_OUT),
        # ... but cut short of it (the pod started late): the cluster's doing, not the code's.
        (DEADLINE_SEQUENCE, _pod(ERROR_137, ran_for=4, deleted=True), "final infrastructure_error"),
        # The pod's own activeDeadlineSeconds (the kubelet's): reason DeadlineExceeded.
        (_job(), _pod(ERROR_137, reason="DeadlineExceeded"), Status.TIMED_OUT),
        # 3. No code ran: stopped before its container started, or never scheduled, or no pod.
        (DEADLINE_SEQUENCE, _pod({**UNKNOWN}, ran_for=None, deleted=True), "retry"),
        (_job(), _pod(None, reason="DeadlineExceeded"), "retry"),
        (DEADLINE_SEQUENCE, None, "retry"),
        # 4. gVisor's OOM reports: OOMKilled/137, Error/128; a plain Error/137 is no evidence.
        (_job(("FailureTarget", "PodFailurePolicy")), _pod({"reason": "OOMKilled", "exitCode": 137}),
         Status.OOM_KILLED),
        (_job(("FailureTarget", "PodFailurePolicy")), _pod({"reason": "Error", "exitCode": 128}),
         Status.OOM_KILLED),
        (_job(("FailureTarget", "PodFailurePolicy")), _pod(ERROR_137), Status.FAILED),
        # The runtime lost a container that had started: the code may have run, never retried.
        (_job(), {**_pod({**UNKNOWN}, ran_for=None), classify.RAN: True}, "final infrastructure_error"),
        # 5. The kubelet's storage eviction: no DisruptionTarget, reason Evicted, exit 137.
        (_job(("FailureTarget", "PodFailurePolicy")),
         _pod(ERROR_137, reason="Evicted", message='Usage of EmptyDir volume "tmp" exceeds the limit.'),
         Status.FAILED),
        # Deleted by someone while it ran (not a deadline): may have run to its end.
        (_job(), _pod(ERROR_137, deleted=True), "final infrastructure_error"),
        # 6. The runner ended well but its report is not in the log (rotated away).
        (_job(("Complete", "CompletionsReached")), _pod({"reason": "Completed", "exitCode": 0}),
         "final infrastructure_error"),
    ],
)
def test_without_frame(job: dict[str, Any], pod: dict[str, Any] | None, expected: Status | str) -> None:
    verdict = without_frame(job, pod, TIMEOUT)
    assert _status(verdict) == expected, verdict
    assert [verdict.report, verdict.retry, verdict.fault].count(None) == 2
    if verdict.report is not None and verdict.report.status is not Status.SUCCEEDED:
        assert verdict.report.exit_code == 137 and verdict.report.error


def test_evidence_of_oom_is_required() -> None:
    """Exit 137 is oom_killed only with an OOMKilled reason (or gVisor's 128), never by itself."""
    for terminated in (ERROR_137, {"exitCode": 137}, {**UNKNOWN}):
        verdict = without_frame(_job(), {**_pod(terminated), classify.RAN: True}, TIMEOUT)
        assert verdict.report is None or verdict.report.status is not Status.OOM_KILLED, terminated


def test_started_needs_a_start() -> None:
    assert not classify.started(_pod({**UNKNOWN}, ran_for=None))
    assert classify.started(_pod(ERROR_137))
    assert classify.started({"status": {"containerStatuses": [{"state": {"running": {"startedAt": "x"}}}]}})
    assert classify.started({**_pod({**UNKNOWN}, ran_for=None), classify.RAN: True})


def test_image_pull_is_trouble_not_yet_blocked() -> None:
    pulling = {"status": {"containerStatuses": [{"state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}}
    assert classify.pull_trouble(pulling) == "ImagePullBackOff: Back-off pulling image"
    assert classify.blocked(pulling, classify.parse_time("2025-01-01T00:00:00Z"), 120) is None  # type: ignore[arg-type]
    invalid = {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "InvalidImageName"}}}]}}
    assert classify.blocked(invalid, classify.parse_time("2025-01-01T00:00:00Z"), 120) == "InvalidImageName"  # type: ignore[arg-type]


def test_a_job_ends_from_failure_target_on() -> None:
    assert classify.job_ending(DEADLINE_SEQUENCE) is not None
    assert classify.job_finished(DEADLINE_SEQUENCE) is None
    assert classify.deadline_passed(DEADLINE_SEQUENCE, None)
    assert not classify.deadline_passed(_job(("FailureTarget", "PodFailurePolicy")), None)
