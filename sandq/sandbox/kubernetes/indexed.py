"""Planning a batch as Indexed Jobs: which snippets share one ConfigMap and one Job.

A batch is split into groups that can share one pod template (same tenant and resources),
then into Indexed Jobs of at most ``indexed_batch_size`` snippets whose ConfigMap stays
under the 1 MiB limit. Pod ``i`` runs snippet ``i`` (its ``JOB_COMPLETION_INDEX``):
``main-i.py``, ``spec-i.json`` and ``in-i-*`` beside one shared runner. Called by ``backend``,
which creates each Job like a single execution's: create Job, create ConfigMap, delete Job
(three writes for the whole Job) and one log read per snippet.
"""

from __future__ import annotations

from sandq.contract import ExecutionRequest
from sandq.sandbox.kubernetes.manifests import IndexedJob, data_size
from sandq.sandbox.protocol import RUNNER_FILE, execution_files, runner_source
from sandq.settings import Settings

CONFIGMAP_BUDGET = 1024 * 1024 - 64 * 1024
"""Bytes of ConfigMap data per Indexed Job: the 1 MiB object limit less room for metadata."""


def _shape(request: ExecutionRequest) -> tuple[str, ...]:
    """What the pods of one Job must share: tenant label and resources."""
    r = request
    return (r.tenant, r.cpu_requested, r.mem_requested, r.cpu_limit, r.mem_limit)


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
            need = data_size(execution_files(request, settings, len(current)))
            if current and (len(current) >= settings.indexed_batch_size or size + need > CONFIGMAP_BUDGET):
                jobs.append(_job(current))
                current, size = [], base
                need = data_size(execution_files(request, settings, 0))
            current.append((execution_id, request))
            size += need
        if current:
            jobs.append(_job(current))
    return jobs
