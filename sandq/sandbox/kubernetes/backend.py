"""KubernetesBackend: each execution as one ephemeral gVisor-sandboxed Job; batches as Indexed Jobs;
or, placed ``warm``, in a claimed sandbox of agent-sandbox's warm pool (``warm``).

Per execution: create Job, create ConfigMap (owned by the Job), read the log once, delete the
Job: three writes and one read. Completion comes from the process's one shared watch
(``watching``), read by ``waiting``, which single executions and Indexed Jobs share. On the
warm path: create and delete a SandboxClaim (two writes) around one attach to its pod.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sandq.broker.routing import Priority
from sandq.contract import ExecutionRequest, SandboxReport, Status, now
from sandq.periodic import Periodic
from sandq.sandbox.backend import Backend, InfrastructureFault, OnOutput, OnResult
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.creating import LaunchRejected, launch, launch_objects
from sandq.sandbox.kubernetes.indexed import plan
from sandq.sandbox.kubernetes.janitor import run_janitor
from sandq.sandbox.kubernetes.manifests import (
    EXECUTION_IDS_ANNOTATION,
    IndexedJob,
    active_deadline_seconds,
    indexed_configmap_manifest,
    indexed_deadline_seconds,
    indexed_job_manifest,
    runs_warm,
)
from sandq.sandbox.kubernetes.waiting import Awaited, Ended, Waiter
from sandq.sandbox.kubernetes.warm import WarmPath
from sandq.sandbox.kubernetes.watching import SharedWatch
from sandq.settings import Settings


class KubernetesBackend(Backend):
    """Runs each request as a Kubernetes Job in ``settings.namespace``."""

    name = "kubernetes"
    runs_batches = True

    def __init__(self, settings: Settings, api: KubeApi | None = None) -> None:
        self.settings = settings
        self.api = api or KubeApi(settings)
        self.watch = SharedWatch(self.api)
        self.waiter = Waiter(self.api, self.watch, self.is_cancelled)
        self.warm = WarmPath(self.api, self.watch, self.is_cancelled)
        self._janitor = Periodic("sandq-janitor", settings.sweep_interval_seconds, self.sweep)
        self._cancelled: set[str] = set()
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def run(
        self, execution_id: str, request: ExecutionRequest, on_output: OnOutput | None = None,
        *, priority: Priority = "interactive",
    ) -> SandboxReport:
        """Run ``request`` as a Job or in a warm sandbox; raise ``InfrastructureFault`` if nothing ran
        for a reason a retry may fix (the API unreachable, no sandbox in time).

        The output comes with the result only (``streams_output`` is False: ``on_output`` is unused).
        """
        self.watch.start()
        if runs_warm(request, self.settings):
            with self._tracking([execution_id]):
                return self.warm.run(execution_id, request)
        started = now()
        try:
            launched = launch(self.api, request, execution_id)
        except LaunchRejected as error:
            return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=str(error), started_at=started)
        deadline = active_deadline_seconds(request, self.settings)
        awaited = Awaited.of(launched, {None: (execution_id, request)}, started, deadline)
        ended: list[Ended] = []
        with self._tracking([execution_id]):
            self.waiter.wait([awaited], lambda _, end: ended.append(end))
        if isinstance(ended[0], InfrastructureFault):
            raise ended[0]
        return ended[0]

    def run_batch(self, items: list[tuple[str, ExecutionRequest]], on_result: OnResult) -> None:
        """Run many requests as Indexed Jobs; ``on_result(id, report)`` as each one ends.

        A Job the cluster refuses ends each of its snippets as an infrastructure error.
        Cancelling some snippets reports them at once; their pods run on unless the whole
        Job is cancelled, which deletes it.
        """
        self.watch.start()

        def on_end(execution_id: str, ended: Ended) -> None:
            if isinstance(ended, InfrastructureFault):  # a batch is not retried: report it
                ended = SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=str(ended))
            on_result(execution_id, ended)

        with self._tracking([execution_id for execution_id, _ in items]):
            launched = (self._launch_indexed(job, on_end) for job in plan(items, self.settings))
            awaited = [a for a in launched if a is not None]
            self.waiter.wait(awaited, on_end)

    def _launch_indexed(self, job: IndexedJob, on_end: OnResult) -> Awaited | None:
        """Create the Indexed Job and its ConfigMap; on failure every snippet of it ends as an error."""
        started = now()
        try:
            launched = launch_objects(
                self.api,
                indexed_job_manifest(job, self.settings),
                lambda uid: indexed_configmap_manifest(job, self.settings, uid),
                EXECUTION_IDS_ANNOTATION,
            )
        except (LaunchRejected, InfrastructureFault) as error:
            for execution_id in job.ids:
                on_end(execution_id, SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=str(error)))
            return None
        pending: dict[int | None, tuple[str, ExecutionRequest]] = dict(
            enumerate(zip(job.ids, job.requests, strict=True))
        )
        deadline = indexed_deadline_seconds(job, self.settings)
        return Awaited.of(launched, pending, started, deadline)

    @contextmanager
    def _tracking(self, execution_ids: list[str]) -> Iterator[None]:
        """Mark executions as running (cancellable) while the body runs."""
        with self._lock:
            self._running.update(execution_ids)
        try:
            yield
        finally:
            with self._lock:
                self._running.difference_update(execution_ids)
                self._cancelled.difference_update(execution_ids)

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
        self.warm.close()
        self.watch.close()
        self.api.close()

