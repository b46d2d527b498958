"""The janitor: delete sandq Jobs that crashed workers left past their deadline plus grace.

ConfigMaps need no pass of their own: each is created with an ownerReference
to its Job, so the garbage collector removes it with the Job (or at once, if
the Job was already gone when the ConfigMap was created).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from sandq.sandbox.kubernetes import classify
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.classify import Obj
from sandq.sandbox.kubernetes.deleting import delete_job
from sandq.sandbox.kubernetes.manifests import SELECTOR
from sandq.sandbox.kubernetes.watching import managed
from sandq.settings import Settings

log = logging.getLogger(__name__)


def expired(job: Obj, at: datetime, grace_seconds: float) -> bool:
    """Whether ``job`` is past its activeDeadlineSeconds (or its end) plus ``grace_seconds``."""
    meta = job.get("metadata") or {}
    created = classify.parse_time(meta.get("creationTimestamp"))
    if created is None:
        return False
    grace = timedelta(seconds=grace_seconds)
    deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
    if deadline is not None and at >= created + timedelta(seconds=int(deadline)) + grace:
        return True
    ended = classify.job_finished(job)
    ended_at = classify.parse_time((ended or {}).get("lastTransitionTime"))
    return ended_at is not None and at >= ended_at + grace


def run_janitor(settings: Settings, api: KubeApi | None = None, at: datetime | None = None) -> int:
    """Delete every expired sandq Job in the namespace; return how many were deleted."""
    own = api is None
    api = api or KubeApi(settings)
    at = at or datetime.now(UTC)
    try:
        resp = api.call(
            "list Jobs", api.batch.list_namespaced_job, settings.namespace, label_selector=SELECTOR,
            _preload_content=False,
        )
        try:
            items: list[Obj] = list(json.loads(resp.data).get("items") or [])
        finally:
            resp.release_conn()
        deleted = 0
        for job in items:
            if managed(job) and expired(job, at, settings.janitor_grace_seconds):
                name = job["metadata"]["name"]
                log.info("janitor: deleting expired Job %s", name)
                deleted += delete_job(api, name)
        return deleted
    finally:
        if own:
            api.close()
