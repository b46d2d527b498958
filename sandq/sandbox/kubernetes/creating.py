"""Launching one execution: create the Job, then its ConfigMap owned by it (two writes, no patch)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from sandq.contract import ExecutionRequest
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.deleting import delete_job
from sandq.sandbox.kubernetes.manifests import (
    EXECUTION_ID_ANNOTATION,
    Manifest,
    configmap_manifest,
    job_manifest,
)

log = logging.getLogger(__name__)

CONFLICT = 409


class LaunchRejected(Exception):
    """The cluster refused the manifests for a reason retrying cannot fix (e.g. 422, 403)."""


@dataclass(frozen=True)
class Launched:
    """The Job (or SandboxClaim) of one execution: its name, uid, and whether this call created it."""

    name: str
    uid: str
    created: bool


def _metadata(obj: Any) -> tuple[str, dict[str, str]]:
    """The uid and the annotations of a typed object or of a plain dict (a custom resource)."""
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        uid, annotations = meta.get("uid"), meta.get("annotations")
    else:
        uid, annotations = obj.metadata.uid, obj.metadata.annotations
    if not uid:
        raise InfrastructureFault("the API server returned an object without a uid")
    return str(uid), dict(annotations or {})


def create_or_adopt(
    api: KubeApi, kind: str, create: Callable[..., Any], read: Callable[..., Any], body: Manifest, marker: str
) -> Launched:
    """Create ``body`` (``create(body)``), or on 409 adopt the object of that name (``read(name)``)
    if its annotation ``marker`` is the body's: a redelivery, or a retried create that had succeeded."""
    name = body["metadata"]["name"]
    try:
        return Launched(name, _metadata(api.call(f"create {kind}", create, body))[0], created=True)
    except ApiException as error:
        if error.status != CONFLICT:
            raise LaunchRejected(f"{kind} rejected: HTTP {error.status} {error.reason}") from error
    uid, annotations = _metadata(api.call(f"get {kind}", read, name))
    if annotations.get(marker) != body["metadata"]["annotations"][marker]:
        raise LaunchRejected(f"{kind} {name} exists but belongs to another execution")
    log.info("adopting the existing %s %s", kind, name)
    return Launched(name, uid, created=False)


def _create_job(api: KubeApi, body: Manifest, marker: str) -> Launched:
    namespace = api.settings.namespace
    create = functools.partial(api.batch.create_namespaced_job, namespace)
    read = functools.partial(api.batch.read_namespaced_job, namespace=namespace)
    return create_or_adopt(api, "Job", create, read, body, marker)


def _create_configmap(api: KubeApi, body: Manifest) -> None:
    try:
        api.call("create ConfigMap", api.core.create_namespaced_config_map, api.settings.namespace, body)
    except ApiException as error:
        if error.status != CONFLICT:  # 409: already there (redelivery, or a retried create)
            raise LaunchRejected(f"ConfigMap rejected: HTTP {error.status} {error.reason}") from error


def launch_objects(
    api: KubeApi, job: Manifest, configmap: Callable[[str], Manifest], marker: str
) -> Launched:
    """Create ``job`` (or attach to it if its annotation ``marker`` matches), then its ConfigMap.

    ``configmap`` makes the ConfigMap from the Job's uid. The pod waits in
    ContainerCreating until the ConfigMap exists. If the ConfigMap cannot be
    created the Job is deleted again, so nothing leaks.
    """
    launched = _create_job(api, job, marker)
    try:
        _create_configmap(api, configmap(launched.uid))
    except (InfrastructureFault, LaunchRejected):
        delete_job(api, launched.name)
        raise
    return launched


def launch(api: KubeApi, request: ExecutionRequest, execution_id: str) -> Launched:
    """Create the Job of one execution (or attach to it on redelivery), then its ConfigMap."""
    return launch_objects(
        api,
        job_manifest(request, api.settings, execution_id),
        lambda uid: configmap_manifest(request, api.settings, execution_id, uid),
        EXECUTION_ID_ANNOTATION,
    )
