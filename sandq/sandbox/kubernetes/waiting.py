"""Waiting for launched Jobs to end: one execution's Job or an Indexed Job's many, the same way.

Called by ``backend``. Every change of a watched Job or of its pods (and every
``POLL_SECONDS``, for deadlines) is read from the shared watch's cache, and each execution
whose pod has ended (or that can never start, or was cancelled) is reported; a Job is deleted
once none of its executions is left. A pod's end is read from its runner's report (one log
read), else from the cluster's status (``classify``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sandq.contract import ExecutionRequest, SandboxReport, Status, now
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes import classify
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.classify import Obj
from sandq.sandbox.kubernetes.creating import Launched
from sandq.sandbox.kubernetes.deleting import delete_job
from sandq.sandbox.kubernetes.fetching import frame_cap, read_logs
from sandq.sandbox.kubernetes.watching import SharedWatch
from sandq.sandbox.protocol import parse_frame

POLL_SECONDS = 1.0
SETTLE_SECONDS = 3.0
"""How long to wait for a pod's final status once its Job has finished without it."""
BACKSTOP_MARGIN_SECONDS = 30.0
"""Slack past activeDeadlineSeconds and the unschedulable bound before sandq deletes a Job itself."""

Ended = SandboxReport | InfrastructureFault
"""How an execution ended: a report, or a fault to retry (the Job vanished before it ended)."""
OnEnd = Callable[[str, Ended], None]


@dataclass
class Awaited:
    """A launched Job and its executions still waiting for their end, by completion index.

    A Job of one execution has the single index None (every pod of the Job is its pod).
    """

    launched: Launched
    pending: dict[int | None, tuple[str, ExecutionRequest]]
    started: datetime
    backstop: float
    seen_job: bool = False
    finished_at: float | None = None

    @classmethod
    def of(
        cls, launched: Launched, pending: dict[int | None, tuple[str, ExecutionRequest]],
        started: datetime, deadline_seconds: float, unschedulable_seconds: float,
    ) -> Awaited:
        """Awaited until ``deadline_seconds`` (the Job's activeDeadlineSeconds) plus the slack."""
        slack = unschedulable_seconds + BACKSTOP_MARGIN_SECONDS
        return cls(launched, pending, started, time.monotonic() + deadline_seconds + slack)


class Waiter:
    """Waits on the shared watch for Jobs to end; one per backend."""

    def __init__(
        self, api: KubeApi, watch: SharedWatch, cancelled: Callable[[str], bool]
    ) -> None:
        self.api = api
        self.watch = watch
        self.cancelled = cancelled

    def wait(self, jobs: list[Awaited], on_end: OnEnd) -> None:
        """Report each execution of ``jobs`` through ``on_end`` as it ends; return once all have.

        Each Job is deleted (its pods and ConfigMap go with it) once none of its executions is
        left, and on the way out whatever happens.
        """
        with self.watch.listen([job.launched.name for job in jobs]) as changed:
            waiting = list(jobs)
            try:
                while waiting:
                    changed.clear()
                    waiting = [job for job in waiting if not self._step(job, on_end)]
                    if waiting:
                        changed.wait(POLL_SECONDS)
            finally:
                for left in waiting:
                    delete_job(self.api, left.launched.name)

    def _step(self, awaited: Awaited, on_end: OnEnd) -> bool:
        """Report the executions of ``awaited`` that ended since the last step; True once none is left."""
        job, pods = self.watch.snapshot(awaited.launched.name, awaited.launched.uid)
        awaited.seen_job = awaited.seen_job or job is not None
        if classify.job_finished(job) is not None:
            awaited.finished_at = awaited.finished_at or time.monotonic()
        for index, (execution_id, request) in list(awaited.pending.items()):
            mine = pods if index is None else [p for p in pods if classify.pod_index(p) == index]
            ended = self._ended(awaited, job, mine, execution_id, request)
            if ended is not None:
                del awaited.pending[index]
                on_end(execution_id, _stamped(ended, awaited, index))
        if awaited.pending:
            return False
        delete_job(self.api, awaited.launched.name)
        return True

    def _ended(
        self, awaited: Awaited, job: Obj | None, pods: list[Obj], execution_id: str, request: ExecutionRequest
    ) -> Ended | None:
        """How one execution ended, from its Job and its pods (newest first), or None while it runs."""
        if self.cancelled(execution_id):
            return SandboxReport(status=Status.CANCELLED, error="cancelled while running")
        if awaited.seen_job and job is None:
            return InfrastructureFault(f"Job {awaited.launched.name} was deleted while running")
        pod = classify.final_pod(pods)
        if pod is not None:
            return self.finish(job, pod, request)
        for candidate in pods:
            reason = classify.blocked(candidate, now(), self.api.settings.unschedulable_timeout_seconds)
            if reason is not None:
                return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=reason)
        if awaited.finished_at is not None and (
            time.monotonic() - awaited.finished_at >= SETTLE_SECONDS or not pods
        ):
            return self.finish(job, pods[0] if pods else None, request)
        if time.monotonic() >= awaited.backstop:
            return backstop_report(pods)
        return None

    def finish(self, job: Obj | None, pod: Obj | None, request: ExecutionRequest) -> SandboxReport:
        """The report of a pod that ended: its runner's report (one log read), else the cluster's verdict."""
        report = None
        if pod is not None and classify.started(pod):
            logs = read_logs(self.api, pod["metadata"]["name"], frame_cap(request, self.api.settings))
            report = parse_frame(logs) if logs else None
        if report is not None:
            return report
        verdict = classify.without_frame(job, pod)
        if verdict.report is not None:
            return verdict.report
        # The user's code may have run: report, do not retry (never re-run a user's code).
        return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=verdict.fault)


def backstop_report(pods: list[Obj]) -> SandboxReport:
    """The report of an execution whose Job sandq had to stop itself."""
    if any(classify.started(p) for p in pods):
        return SandboxReport(
            status=Status.TIMED_OUT, exit_code=classify.TIMED_OUT_EXIT,
            error="the cluster did not stop the Job at its deadline; sandq deleted it",
        )
    return SandboxReport(
        status=Status.INFRASTRUCTURE_ERROR, error="the sandbox pod never started; sandq deleted the Job"
    )


def _stamped(ended: Ended, awaited: Awaited, index: int | None) -> Ended:
    """The report with the sandbox's name (the Job, and the index in an Indexed Job) and its times."""
    if isinstance(ended, InfrastructureFault):
        return ended
    name = awaited.launched.name if index is None else f"{awaited.launched.name}[{index}]"
    return ended.model_copy(
        update={"sandbox_name": name, "started_at": awaited.started, "finished_at": now()}
    )

