"""Batches as Indexed Jobs: one ConfigMap and one Job for many snippets.

A batch is split into groups that can share one pod template (same tenant
and resources), then into Indexed Jobs of at most ``indexed_batch_size``
snippets whose ConfigMap stays under the 1 MiB limit. Pod ``i`` runs snippet
``i`` (its ``JOB_COMPLETION_INDEX``): ``main-i.py``, ``spec-i.json`` and
``in-i-*`` beside one shared runner. Per Job: create Job, create ConfigMap,
delete Job (three writes for the whole Job) and one log read per snippet.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sandq.contract import ExecutionRequest, Status
from sandq.sandbox_files import INDEXED_SPEC, RUNNER_FILE, indexed_files, runner_command, runner_source
from sandq.settings import Settings
from sandq.worker.backend import InfrastructureFault, SandboxReport, now
from sandq.worker.kubernetes import classify
from sandq.worker.kubernetes.creating import Launched, LaunchRejected, launch_objects
from sandq.worker.kubernetes.deleting import delete_job
from sandq.worker.kubernetes.manifests import (
    EXECUTION_LABEL,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    POD_PYTHON,
    TENANT_LABEL,
    Manifest,
    config_map,
    owner_reference,
    pod_failure_policy,
    pod_spec,
)
from sandq.worker.kubernetes.watching import Obj

if TYPE_CHECKING:
    from sandq.worker.kubernetes.backend import KubernetesBackend

OnResult = Callable[[str, SandboxReport], None]

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
EXECUTION_IDS_ANNOTATION = "sandq.dev/execution-ids"
NAME_PREFIX = "sqb-"
CONFIGMAP_BUDGET = 1024 * 1024 - 64 * 1024
"""Bytes of ConfigMap data per Indexed Job: the 1 MiB object limit less room for metadata."""
BACKSTOP_MARGIN_SECONDS = 30.0
SETTLE_SECONDS = 3.0
POLL_SECONDS = 1.0
CANCELLED = SandboxReport(status=Status.CANCELLED, error="cancelled while running")


@dataclass(frozen=True)
class IndexedJob:
    """Snippets that run as one Indexed Job: index ``i`` is ``ids[i]`` running ``requests[i]``."""

    ids: tuple[str, ...]
    requests: tuple[ExecutionRequest, ...]

    @property
    def name(self) -> str:
        """Deterministic in the ids, so a redelivered batch attaches to its own Job."""
        return NAME_PREFIX + hashlib.sha256("\n".join(self.ids).encode()).hexdigest()[:40]

    @property
    def template(self) -> ExecutionRequest:
        """The request whose resources and tenant every pod shares (all are equal there)."""
        return self.requests[0]


def _shape(request: ExecutionRequest) -> tuple[str, ...]:
    """What the pods of one Job must share: tenant label and resources."""
    r = request
    return (r.tenant, r.cpu_requested, r.mem_requested, r.cpu_limit, r.mem_limit)


def _data_size(files: dict[str, bytes]) -> int:
    """Bytes the files take in a ConfigMap (binary ones base64-encoded)."""
    size = 0
    for key, content in files.items():
        try:
            content.decode("utf-8")
            size += len(key) + len(content)
        except UnicodeDecodeError:
            size += len(key) + 4 * math.ceil(len(content) / 3)
    return size


def _job(items: list[tuple[str, ExecutionRequest]]) -> IndexedJob:
    return IndexedJob(tuple(i for i, _ in items), tuple(r for _, r in items))


def plan(items: list[tuple[str, ExecutionRequest]], settings: Settings) -> list[IndexedJob]:
    """Split a batch into Indexed Jobs: by pod shape, then by count and ConfigMap size (order kept)."""
    groups: dict[tuple[str, ...], list[tuple[str, ExecutionRequest]]] = {}
    for item in items:
        groups.setdefault(_shape(item[1]), []).append(item)
    jobs: list[IndexedJob] = []
    base = len(RUNNER_FILE) + len(runner_source())
    for group in groups.values():
        current: list[tuple[str, ExecutionRequest]] = []
        size = base
        for execution_id, request in group:
            need = _data_size(indexed_files(request, settings, len(current)))
            if current and (len(current) >= settings.indexed_batch_size or size + need > CONFIGMAP_BUDGET):
                jobs.append(_job(current))
                current, size = [], base
                need = _data_size(indexed_files(request, settings, 0))
            current.append((execution_id, request))
            size += need
        if current:
            jobs.append(_job(current))
    return jobs


def _metadata(job: IndexedJob, settings: Settings) -> Manifest:
    return {
        "name": job.name,
        "namespace": settings.namespace,
        "labels": {
            MANAGED_BY: MANAGED_BY_VALUE,
            EXECUTION_LABEL: job.name[len(NAME_PREFIX) :],
            TENANT_LABEL: job.template.tenant,
        },
        "annotations": {EXECUTION_IDS_ANNOTATION: json.dumps(list(job.ids))},
    }


def active_deadline_seconds(job: IndexedJob, settings: Settings) -> int:
    """The whole Job's deadline: its longest timeout (plus kill grace) for each wave of pods."""
    waves = math.ceil(len(job.ids) / min(settings.indexed_parallelism, len(job.ids)))
    longest = max(r.timeout_seconds for r in job.requests)
    return waves * (longest + math.ceil(settings.kill_grace_seconds))


def configmap_manifest(job: IndexedJob, settings: Settings, job_uid: str) -> Manifest:
    """One ConfigMap for every snippet of the Job (and the runner, once), owned by the Job."""
    files = {RUNNER_FILE: runner_source()}
    for index, request in enumerate(job.requests):
        files.update(indexed_files(request, settings, index))
    metadata = _metadata(job, settings)
    metadata["ownerReferences"] = [owner_reference(job.name, job_uid)]
    return config_map(files, metadata)


def job_manifest(job: IndexedJob, settings: Settings) -> Manifest:
    """The Indexed Job: one pod per snippet, ``indexed_parallelism`` at once, one try per index."""
    metadata = _metadata(job, settings)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": len(job.ids),
            "parallelism": min(settings.indexed_parallelism, len(job.ids)),
            "backoffLimitPerIndex": 0,
            "activeDeadlineSeconds": active_deadline_seconds(job, settings),
            "podFailurePolicy": pod_failure_policy("FailIndex"),
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": {"labels": dict(metadata["labels"])},
                "spec": pod_spec(job.template, settings, job.name, runner_command(POD_PYTHON, INDEXED_SPEC)),
            },
        },
    }


def pod_index(pod: Obj) -> int | None:
    """The completion index of an Indexed Job's pod."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION)
    return int(value) if value is not None and str(value).isdigit() else None


def _error(message: str) -> SandboxReport:
    return SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=message)


def _blocked(pods: list[Obj], settings: Settings) -> str | None:
    """Why one of these pods can never start, if one cannot."""
    for pod in pods:
        reason = classify.blocked(pod, now(), settings.unschedulable_timeout_seconds)
        if reason is not None:
            return reason
    return None


class _Running:
    """One launched Indexed Job and the indexes still waiting for a result."""

    def __init__(self, job: IndexedJob, launched: Launched, settings: Settings) -> None:
        self.job = job
        self.launched = launched
        self.pending = dict(enumerate(job.ids))
        self.seen_job = False
        self.finished_at: float | None = None
        slack = settings.unschedulable_timeout_seconds + BACKSTOP_MARGIN_SECONDS
        self.backstop = time.monotonic() + active_deadline_seconds(job, settings) + slack


class _Batch:
    """The wait of one task for its Indexed Jobs, on one listener of the shared watch."""

    def __init__(self, backend: KubernetesBackend, on_result: OnResult) -> None:
        self.backend = backend
        self.on_result = on_result
        self.started = now()

    def emit(self, running: _Running, index: int, report: SandboxReport) -> None:
        execution_id = running.pending.pop(index)
        self.on_result(
            execution_id,
            report.model_copy(
                update={
                    "sandbox_name": f"{running.launched.name}[{index}]",
                    "started_at": self.started,
                    "finished_at": now(),
                }
            ),
        )

    def launch(self, job: IndexedJob) -> _Running | None:
        """Create the Job and its ConfigMap; on failure every snippet of it ends as an error."""
        api = self.backend.api
        try:
            launched = launch_objects(
                api,
                job_manifest(job, api.settings),
                lambda uid: configmap_manifest(job, api.settings, uid),
                EXECUTION_IDS_ANNOTATION,
            )
        except (LaunchRejected, InfrastructureFault) as error:
            for execution_id in job.ids:
                self.on_result(execution_id, _error(str(error)))
            return None
        return _Running(job, launched, api.settings)

    def step(self, running: _Running) -> bool:
        """Report every index that ended since the last step; True once none is left."""
        backend = self.backend
        job, pods = backend.watch.snapshot(running.launched.name, running.launched.uid)
        if job is not None:
            running.seen_job = True
        by_index: dict[int, list[Obj]] = {}
        for each in pods:
            index = pod_index(each)
            if index is not None:
                by_index.setdefault(index, []).append(each)
        finished = classify.job_finished(job) is not None
        if finished:
            running.finished_at = running.finished_at or time.monotonic()
        settled = finished and time.monotonic() - (running.finished_at or 0) >= SETTLE_SECONDS
        for index, execution_id in list(running.pending.items()):
            mine = by_index.get(index, [])
            request = running.job.requests[index]
            if backend.is_cancelled(execution_id):
                self.emit(running, index, CANCELLED)
            elif (pod := classify.final_pod(mine)) is not None:
                self.emit(running, index, backend.finish(job, pod, request))
            elif running.seen_job and job is None:
                self.emit(running, index, _error(f"Job {running.launched.name} was deleted while running"))
            elif (blocked := _blocked(mine, backend.settings)) is not None:
                self.emit(running, index, _error(blocked))
            elif settled or (finished and not mine):
                self.emit(
                    running,
                    index,
                    backend.finish(job, mine[0], request)
                    if mine
                    else _error(f"the Job ended before index {index} started"),
                )
            elif time.monotonic() >= running.backstop:
                self.emit(running, index, backend.backstop_report(mine))
        if running.pending:
            return False
        delete_job(backend.api, running.launched.name)
        return True


def run_batch(
    backend: KubernetesBackend, items: list[tuple[str, ExecutionRequest]], on_result: OnResult
) -> None:
    """Launch the batch's Indexed Jobs, then report each snippet as its pod ends.

    Cancelling some snippets reports them at once; their pods run on unless the
    whole Job is cancelled, which deletes it.
    """
    batch = _Batch(backend, on_result)
    jobs = plan(items, backend.settings)
    with backend.watch.listen([job.name for job in jobs]) as changed:
        running = [r for r in map(batch.launch, jobs) if r is not None]
        try:
            while running:
                changed.clear()
                running = [r for r in running if not batch.step(r)]
                if running:
                    changed.wait(POLL_SECONDS)
        finally:
            for left in running:
                delete_job(backend.api, left.launched.name)
