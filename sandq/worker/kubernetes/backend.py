"""KubernetesBackend: each execution as one ephemeral gVisor-sandboxed Job.

Per execution: create Job, create ConfigMap (owned by the Job), read the log
once, delete the Job — three writes and one read. Completion comes from the
process's one shared watch; a client-side backstop deletes a Job the cluster
failed to stop.
"""

from __future__ import annotations

import logging
import threading
import time

from sandq.contract import ExecutionRequest, Status
from sandq.settings import Settings
from sandq.worker.backend import Backend, InfrastructureFault, SandboxReport, now, parse_frame
from sandq.worker.kubernetes import classify
from sandq.worker.kubernetes.api_client import KubeApi
from sandq.worker.kubernetes.creating import Launched, LaunchRejected, launch
from sandq.worker.kubernetes.deleting import delete_job
from sandq.worker.kubernetes.fetching import frame_cap, read_logs
from sandq.worker.kubernetes.indexed import OnResult, run_batch
from sandq.worker.kubernetes.janitor import run_janitor
from sandq.worker.kubernetes.manifests import active_deadline_seconds, object_name
from sandq.worker.kubernetes.watching import Obj, SharedWatch
from sandq.worker.periodic import Periodic

log = logging.getLogger(__name__)

BACKSTOP_MARGIN_SECONDS = 30.0
"""Slack past activeDeadlineSeconds and the unschedulable bound before sandq deletes a Job itself."""
SETTLE_SECONDS = 3.0
"""How long to wait for the pod's final status once the Job has finished without it."""
POLL_SECONDS = 1.0


class KubernetesBackend(Backend):
    """Runs each request as a Kubernetes Job in ``settings.namespace``."""

    name = "kubernetes"

    def __init__(self, settings: Settings, api: KubeApi | None = None) -> None:
        self.settings = settings
        self.api = api or KubeApi(settings)
        self.watch = SharedWatch(self.api)
        self._janitor = Periodic("sandq-janitor", settings.sweep_interval_seconds, self.sweep)
        self._cancelled: set[str] = set()
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def run(self, execution_id: str, request: ExecutionRequest) -> SandboxReport:
        """Run ``request`` as a Job; raise ``InfrastructureFault`` if the API stays unreachable."""
        self.watch.start()
        started = now()
        try:
            launched = launch(self.api, request, execution_id)
        except LaunchRejected as error:
            return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=str(error), started_at=started)
        with self._lock:
            self._running.add(execution_id)
        try:
            report = self._await(execution_id, launched, request)
        finally:
            with self._lock:
                self._running.discard(execution_id)
                self._cancelled.discard(execution_id)
            delete_job(self.api, launched.name)
        return report.model_copy(
            update={"sandbox_name": launched.name, "started_at": started, "finished_at": now()}
        )

    def _backstop(self, request: ExecutionRequest) -> float:
        slack = self.settings.unschedulable_timeout_seconds + BACKSTOP_MARGIN_SECONDS
        return time.monotonic() + active_deadline_seconds(request, self.settings) + slack

    def _await(self, execution_id: str, launched: Launched, request: ExecutionRequest) -> SandboxReport:
        with self.watch.listen([launched.name]) as changed:
            return self._await_changes(execution_id, launched, request, changed)

    def _await_changes(
        self, execution_id: str, launched: Launched, request: ExecutionRequest, changed: threading.Event
    ) -> SandboxReport:
        """Re-check the Job at each change of its Job or pods (and every POLL_SECONDS, for deadlines)."""
        backstop = self._backstop(request)
        seen_job = False
        finished_at: float | None = None
        while True:
            changed.clear()
            if self.is_cancelled(execution_id):
                return SandboxReport(status=Status.CANCELLED, error="cancelled while running")
            job, pods = self.watch.snapshot(launched.name, launched.uid)
            if job is not None:
                seen_job = True
            elif seen_job:
                raise InfrastructureFault(f"Job {launched.name} was deleted while running")
            pod = classify.final_pod(pods)
            if pod is not None:
                return self.finish(job, pod, request)
            for candidate in pods:
                reason = classify.blocked(candidate, now(), self.settings.unschedulable_timeout_seconds)
                if reason is not None:
                    return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=reason)
            if classify.job_finished(job) is not None:
                finished_at = finished_at or time.monotonic()
                if time.monotonic() - finished_at >= SETTLE_SECONDS or not pods:
                    return self.finish(job, pods[0] if pods else None, request)
            if time.monotonic() >= backstop:
                return self.backstop_report(pods)
            changed.wait(POLL_SECONDS)

    def finish(self, job: Obj | None, pod: Obj | None, request: ExecutionRequest) -> SandboxReport:
        """The report of a pod that ended: its frame (one log read), else the cluster's verdict."""
        report = None
        if pod is not None and classify.started(pod):
            logs = read_logs(self.api, pod["metadata"]["name"], frame_cap(request, self.settings))
            report = parse_frame(logs) if logs else None
        if report is not None:
            return report
        verdict = classify.without_frame(job, pod)
        if verdict.report is not None:
            return verdict.report
        # The user's code may have run: report, do not retry (never re-run a user's code).
        return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=verdict.fault)

    @staticmethod
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

    def run_indexed(self, items: list[tuple[str, ExecutionRequest]], on_result: OnResult) -> None:
        """Run many requests as Indexed Jobs; ``on_result(id, report)`` as each one ends."""
        self.watch.start()
        ids = [execution_id for execution_id, _ in items]
        with self._lock:
            self._running.update(ids)
        try:
            run_batch(self, items, on_result)
        finally:
            with self._lock:
                self._running.difference_update(ids)
                self._cancelled.difference_update(ids)

    def is_cancelled(self, execution_id: str) -> bool:
        """Whether ``cancel`` was called for this running execution."""
        with self._lock:
            return execution_id in self._cancelled

    def cancel(self, execution_id: str) -> bool:
        """Stop a running execution: its Job is deleted and it ends as ``cancelled``."""
        with self._lock:
            if execution_id not in self._running:
                return False
            self._cancelled.add(execution_id)
        self.watch.poke()
        return True

    def sweep(self) -> None:
        """Delete sandq Jobs left past their deadline by crashed workers."""
        run_janitor(self.settings, self.api)

    def start(self) -> None:
        """Run the janitor periodically in this worker process."""
        self._janitor.start()

    def close(self) -> None:
        """Stop the janitor and the shared watch, and close the connection pool."""
        self._janitor.stop()
        self.watch.close()
        self.api.close()


def job_name(execution_id: str) -> str:
    """The Job name of an execution (re-exported for callers)."""
    return object_name(execution_id)
