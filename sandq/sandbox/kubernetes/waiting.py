"""Waiting for launched Jobs to end: one execution's Job or an Indexed Job's many, the same way.

Called by ``backend``. Every change of a watched Job or of its pods (and every
``POLL_SECONDS``, for the bounds) is read from the shared watch's cache, and each execution
whose pod has ended (or that can never start, or was cancelled) is reported; a Job is deleted
once none of its executions is left. A pod's end is read from its runner's report (one log
read), else from the cluster's status (``classify``). An execution whose code never started
ends as an ``InfrastructureFault``, which the worker retries; once the code may have run, it
never does (a report that cannot be read is a final infrastructure error).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sandq.contract import ExecutionRequest, SandboxReport, Status, now
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes import classify
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.classify import Obj, Verdict
from sandq.sandbox.kubernetes.creating import Launched
from sandq.sandbox.kubernetes.deleting import delete_job
from sandq.sandbox.kubernetes.fetching import frame_cap, read_logs
from sandq.sandbox.kubernetes.watching import SharedWatch
from sandq.sandbox.protocol import parse_frame

POLL_SECONDS = 1.0
SETTLE_SECONDS = 3.0
"""How long to wait for a pod's final status once its Job ends without it, or for the Job's
reason once a pod was deleted under it."""
BACKSTOP_MARGIN_SECONDS = 30.0
"""Slack past the Job's activeDeadlineSeconds before sandq deletes the Job itself."""

Ended = SandboxReport | InfrastructureFault
"""How an execution ended: a report, or a fault to retry (no code ran)."""
OnEnd = Callable[[str, Ended], None]


@dataclass
class Awaited:
    """A launched Job and its executions still waiting for their end, by completion index.

    A Job of one execution has the single index None (every pod of the Job is its pod). The
    clocks remember since when a pod has failed to pull its image, an index has had no pod in
    progress, and a pod was seen deleted (by pod uid, or by index).
    """

    launched: Launched
    pending: dict[int | None, tuple[str, ExecutionRequest]]
    started: datetime
    backstop: float
    seen_job: bool = False
    since: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls, launched: Launched, pending: dict[int | None, tuple[str, ExecutionRequest]],
        started: datetime, deadline_seconds: float,
    ) -> Awaited:
        """Awaited until ``deadline_seconds`` (the Job's activeDeadlineSeconds) plus a margin."""
        return cls(launched, pending, started, time.monotonic() + deadline_seconds + BACKSTOP_MARGIN_SECONDS)

    def lasted(self, key: str, still: bool) -> float:
        """Seconds since ``key`` first held (0 when it does not hold now: its clock is reset)."""
        if not still:
            self.since.pop(key, None)
            return 0.0
        return time.monotonic() - self.since.setdefault(key, time.monotonic())


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
        ending = classify.job_ending(job) is not None
        # A Job with no pod in progress (none made yet, or none between an eviction and the next).
        podless = awaited.lasted("podless", not ending and not any(map(_in_progress, pods)))
        for index, (execution_id, request) in list(awaited.pending.items()):
            mine = pods if index is None else [p for p in pods if classify.pod_index(p) == index]
            ended = self._ended(awaited, job, mine, podless, execution_id, request)
            if ended is not None:
                del awaited.pending[index]
                on_end(execution_id, _stamped(ended, awaited, index))
        if awaited.pending:
            return False
        delete_job(self.api, awaited.launched.name)
        return True

    def _ended(
        self, awaited: Awaited, job: Obj | None, pods: list[Obj], podless: float,
        execution_id: str, request: ExecutionRequest,
    ) -> Ended | None:
        """How one execution ended, from its Job and its pods (newest first), or None while it runs."""
        settings = self.api.settings
        if self.cancelled(execution_id):
            return SandboxReport(status=Status.CANCELLED, error="cancelled while running")
        if awaited.seen_job and job is None:
            why = f"its Job {awaited.launched.name} was deleted while it ran"
            if any(classify.started(p) for p in pods if not classify.disrupted(p)):
                return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=why)
            return InfrastructureFault(f"no code ran: {why}")
        ending = classify.job_ending(job) is not None
        pod = classify.final_pod(pods)
        if pod is not None:
            # Deleted under a Job not yet seen ending: its reason (a deadline?) is on its way.
            waited = awaited.lasted(classify.uid(pod), True)
            if classify.deleted(pod) and not ending and waited < SETTLE_SECONDS:
                return None
            return self.finish(job, pod, request)
        live = [p for p in pods if _in_progress(p)]
        for candidate in live:
            reason = classify.blocked(candidate, now(), settings.unschedulable_timeout_seconds)
            trouble = classify.pull_trouble(candidate)
            pulling = awaited.lasted(f"pull {classify.uid(candidate)}", trouble is not None)
            if reason is None and trouble is not None and pulling >= settings.image_pull_timeout_seconds:
                reason = f"{trouble} (for {pulling:.0f} s)"
            if reason is not None:
                return InfrastructureFault(f"no code ran: {reason}")
        if podless >= settings.unschedulable_timeout_seconds + settings.eviction_backoff_seconds:
            return InfrastructureFault(
                f"no code ran: no sandbox pod for {podless:.0f} s (a ResourceQuota, an admission webhook "
                "or a missing RuntimeClass refusing it?)"
            )
        if ending and (not live or awaited.lasted("ending", True) >= SETTLE_SECONDS):
            newest = next((p for p in pods if not classify.disrupted(p)), pods[0] if pods else None)
            return self.finish(job, newest, request)
        if time.monotonic() >= awaited.backstop:
            return self._outcome(classify.backstop(pods), "past the Job's deadline")
        return None

    def finish(self, job: Obj | None, pod: Obj | None, request: ExecutionRequest) -> Ended:
        """The end of a pod: its runner's report (one log read), else the cluster's verdict."""
        if pod is not None and classify.started(pod):
            try:
                logs = read_logs(self.api, pod["metadata"]["name"], frame_cap(request, self.api.settings))
            except InfrastructureFault as error:  # the code ran: never run it again for a lost read
                return SandboxReport(
                    status=Status.INFRASTRUCTURE_ERROR,
                    error=f"the code ran, but its report could not be read ({error}); it is not run again",
                )
            report = parse_frame(logs) if logs else None
            if report is not None:
                return report
        return self._outcome(classify.without_frame(job, pod, request.timeout_seconds))

    @staticmethod
    def _outcome(verdict: Verdict, context: str = "") -> Ended:
        """A verdict as an end: its report, a fault to retry, or a final infrastructure error."""
        if verdict.report is not None:
            return verdict.report
        prefix = f"{context}: " if context else ""
        if verdict.retry is not None:
            return InfrastructureFault(prefix + verdict.retry)
        return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=prefix + str(verdict.fault))


def _in_progress(pod: Obj) -> bool:
    """Whether the pod may still run the code: neither over nor disrupted."""
    return not classify.ended(pod) and not classify.disrupted(pod)


def _stamped(ended: Ended, awaited: Awaited, index: int | None) -> Ended:
    """The report with the sandbox's name (the Job, and the index in an Indexed Job) and its times."""
    if isinstance(ended, InfrastructureFault):
        return ended
    name = awaited.launched.name if index is None else f"{awaited.launched.name}[{index}]"
    return ended.model_copy(
        update={"sandbox_name": name, "started_at": awaited.started, "finished_at": now()}
    )
