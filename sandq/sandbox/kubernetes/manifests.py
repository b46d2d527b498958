"""Pure functions from requests and the settings to every manifest the backend creates.

A Job and its ConfigMap for one execution, or for an Indexed Job of many (``IndexedJob``,
planned by ``indexed``); on the warm path, a SandboxClaim for one execution and the
SandboxTemplate its sandbox comes from. Called by ``backend``, ``warm`` and ``dry_run``;
nothing here calls the API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from sandq.contract import ExecutionRequest
from sandq.sandbox.protocol import (
    INDEXED_SPEC,
    MOUNT_DIR,
    RUNNER_FILE,
    attached_command,
    execution_files,
    runner_command,
    runner_source,
    sandbox_files,
)
from sandq.settings import Settings

Manifest = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "sandq"
SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
EXECUTION_LABEL = "sandq.dev/execution"
TENANT_LABEL = "sandq.dev/tenant"
EXECUTION_ID_ANNOTATION = "sandq.dev/execution-id"
EXECUTION_IDS_ANNOTATION = "sandq.dev/execution-ids"
INDEXED_PREFIX = "sqb-"
CONTAINER = "runner"
POD_PYTHON = "python3"
NAME_PREFIX = "sq-"
FILES_VOLUME = "sandq-files"
TMP_VOLUME = "tmp"

_SAFE_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,58}[a-z0-9])?$")
_NAME_MAX = 63


def pod_failure_policy(on_failure: str) -> dict[str, Any]:
    """The Job's pod failure policy: disruptions (eviction, preemption) are ignored, not the user's fault;
    a failed run ends with ``on_failure``.
    """
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": on_failure,
                "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]},
            },
        ]
    }


def object_name(execution_id: str) -> str:
    """The deterministic name of the Job and ConfigMap of one execution.

    A DNS label of at most 63 characters (the Job controller copies it into a
    label): ``sq-<id>`` when the id is already safe, else ``sq-<sha256 prefix>``.
    """
    lowered = execution_id.lower()
    if _SAFE_ID.match(lowered) and len(NAME_PREFIX) + len(lowered) <= _NAME_MAX and lowered == execution_id:
        return NAME_PREFIX + lowered
    return NAME_PREFIX + hashlib.sha256(execution_id.encode()).hexdigest()[:40]


def labels(request: ExecutionRequest, execution_id: str) -> dict[str, str]:
    """Labels on the Job, its pods and its ConfigMap."""
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        EXECUTION_LABEL: object_name(execution_id)[len(NAME_PREFIX) :],
        TENANT_LABEL: request.tenant,
    }


def _metadata(request: ExecutionRequest, settings: Settings, execution_id: str) -> Manifest:
    return {
        "name": object_name(execution_id),
        "namespace": settings.namespace,
        "labels": labels(request, execution_id),
        "annotations": {EXECUTION_ID_ANNOTATION: execution_id},
    }


def owner_reference(job_name: str, job_uid: str) -> Manifest:
    """An ownerReference to the Job, so the ConfigMap is garbage-collected with it.

    ``blockOwnerDeletion`` stays unset: setting it would need update rights on
    ``jobs/finalizers``.
    """
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid}


def config_map(files: dict[str, bytes], metadata: Manifest) -> Manifest:
    """An immutable ConfigMap holding ``files``: UTF-8 ones as ``data``, the others as ``binaryData``."""
    text: dict[str, str] = {}
    binary: dict[str, str] = {}
    for key, content in files.items():
        try:
            text[key] = content.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode("ascii")
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "immutable": True,
        "data": text,
    }
    if binary:
        manifest["binaryData"] = binary
    return manifest


def configmap_manifest(
    request: ExecutionRequest, settings: Settings, execution_id: str, job_uid: str
) -> Manifest:
    """The ConfigMap with the sandbox files (code, runner, spec, inputs), owned by the Job."""
    metadata = _metadata(request, settings, execution_id)
    metadata["ownerReferences"] = [owner_reference(object_name(execution_id), job_uid)]
    return config_map(sandbox_files(request, settings), metadata)


def pod_deadline_seconds(timeout_seconds: int, settings: Settings) -> int:
    """A sandbox pod's activeDeadlineSeconds, which the kubelet counts from the pod's start on its node.

    The code's own deadline is the runner's, counted from the code's start; this backstop adds
    the start-up (image pull, volume mounts, boot) and the kill grace in which the runner
    reports, so that it never cuts a code that started in time short of its timeout.
    """
    slack = math.ceil(settings.kill_grace_seconds) + math.ceil(settings.start_timeout_seconds)
    return timeout_seconds + slack


def job_deadline_seconds(longest_timeout: int, waves: int, settings: Settings) -> int:
    """A Job's activeDeadlineSeconds, counted from the Job's start: the last backstop.

    Room for scheduling, each wave of pods and one more pod, which replaces an evicted one
    after the Job controller's backoff. Only a pod that never started (or a crashed worker's
    Job) runs into it.
    """
    backoff = math.ceil(settings.unschedulable_timeout_seconds) + math.ceil(settings.eviction_backoff_seconds)
    return (waves + 1) * pod_deadline_seconds(longest_timeout, settings) + backoff


def run_deadline_seconds(request: ExecutionRequest, settings: Settings) -> int:
    """How long a code that started may take: its timeout, and the kill grace in which the runner
    reports (a warm sandbox's run, which starts only once its pod is up)."""
    return request.timeout_seconds + math.ceil(settings.kill_grace_seconds)


def active_deadline_seconds(request: ExecutionRequest, settings: Settings) -> int:
    """The Job's deadline of one execution (``job_deadline_seconds`` of one pod)."""
    return job_deadline_seconds(request.timeout_seconds, 1, settings)


def _security_context(settings: Settings) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.sandbox_uid,
        "runAsGroup": settings.sandbox_uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container(request: ExecutionRequest, settings: Settings, command: list[str]) -> Manifest:
    storage = settings.ephemeral_storage_limit
    return {
        "name": CONTAINER,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "workingDir": "/tmp",
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "LANG", "value": "C.UTF-8"},
        ],
        "resources": {
            "requests": {
                "cpu": request.cpu_requested,
                "memory": request.mem_requested,
                "ephemeral-storage": storage,
            },
            "limits": {"cpu": request.cpu_limit, "memory": request.mem_limit, "ephemeral-storage": storage},
        },
        "securityContext": _security_context(settings),
        "volumeMounts": [
            {"name": FILES_VOLUME, "mountPath": MOUNT_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "terminationMessagePolicy": "File",
    }


def _tmp_volume(settings: Settings) -> Manifest:
    """The writable /tmp: by default a tmpfs of ``tmp_size`` (full at its size, counted as memory)."""
    empty_dir: Manifest = {"sizeLimit": settings.tmp_size}
    if settings.tmp_medium:
        empty_dir["medium"] = settings.tmp_medium
    return {"name": TMP_VOLUME, "emptyDir": empty_dir}


def pod_spec(
    request: ExecutionRequest, settings: Settings, configmap: str, command: list[str] | None = None,
    timeout_seconds: int | None = None,
) -> Manifest:
    """The sandbox pod: ``request``'s resources, files from ConfigMap ``configmap``, PSS restricted,
    and a deadline for a timeout of ``timeout_seconds`` (the request's by default)."""
    timeout = request.timeout_seconds if timeout_seconds is None else timeout_seconds
    spec: Manifest = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": pod_deadline_seconds(timeout, settings),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "terminationGracePeriodSeconds": 0,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.sandbox_uid,
            "runAsGroup": settings.sandbox_uid,
            "fsGroup": settings.sandbox_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(request, settings, command or runner_command(POD_PYTHON))],
        "volumes": [
            {
                "name": FILES_VOLUME,
                "configMap": {"name": configmap, "defaultMode": 0o444},
            },
            _tmp_volume(settings),
        ],
    }
    if settings.runtime_class:
        spec["runtimeClassName"] = settings.runtime_class
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [dict(t) for t in settings.tolerations]
    return spec


def job_manifest(request: ExecutionRequest, settings: Settings, execution_id: str) -> Manifest:
    """The Job of one execution: one try, a hard deadline, disruptions not held against the user."""
    metadata = _metadata(request, settings, execution_id)
    spec = {
        "activeDeadlineSeconds": active_deadline_seconds(request, settings),
        "backoffLimit": 0,
        "podFailurePolicy": pod_failure_policy("FailJob"),
    }
    pod = pod_spec(request, settings, object_name(execution_id))
    return _job(metadata, spec, pod, settings, pod_annotations=True)


def _job(
    metadata: Manifest, spec: Manifest, pod: Manifest, settings: Settings, *, pod_annotations: bool
) -> Manifest:
    """A Job with ``spec`` whose pods run ``pod`` and carry its labels (and its annotations)."""
    template: Manifest = {"labels": dict(metadata["labels"])}
    if pod_annotations:
        template["annotations"] = dict(metadata["annotations"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            **spec,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {"metadata": template, "spec": pod},
        },
    }


@dataclass(frozen=True)
class IndexedJob:
    """Snippets that run as one Indexed Job: index ``i`` is ``ids[i]`` running ``requests[i]``."""

    ids: tuple[str, ...]
    requests: tuple[ExecutionRequest, ...]

    @property
    def name(self) -> str:
        """Deterministic in the ids, so a redelivered batch attaches to its own Job."""
        return INDEXED_PREFIX + hashlib.sha256("\n".join(self.ids).encode()).hexdigest()[:40]

    @property
    def longest_timeout(self) -> int:
        """The longest timeout of the snippets: every pod's deadline allows for it."""
        return max(r.timeout_seconds for r in self.requests)

    @property
    def template(self) -> ExecutionRequest:
        """The request whose resources and tenant every pod shares (all are equal there)."""
        return self.requests[0]


def _indexed_metadata(job: IndexedJob, settings: Settings) -> Manifest:
    return {
        "name": job.name,
        "namespace": settings.namespace,
        "labels": {
            MANAGED_BY: MANAGED_BY_VALUE,
            EXECUTION_LABEL: job.name[len(INDEXED_PREFIX) :],
            TENANT_LABEL: job.template.tenant,
        },
        "annotations": {EXECUTION_IDS_ANNOTATION: json.dumps(list(job.ids))},
    }


def indexed_deadline_seconds(job: IndexedJob, settings: Settings) -> int:
    """The whole Job's deadline: a pod's deadline (for the longest timeout) for each wave of pods."""
    waves = math.ceil(len(job.ids) / min(settings.indexed_parallelism, len(job.ids)))
    return job_deadline_seconds(job.longest_timeout, waves, settings)


def indexed_configmap_manifest(job: IndexedJob, settings: Settings, job_uid: str) -> Manifest:
    """One ConfigMap for every snippet of the Job (and the runner, once), owned by the Job."""
    files = {RUNNER_FILE: runner_source()}
    for index, request in enumerate(job.requests):
        files.update(execution_files(request, settings, index))
    metadata = _indexed_metadata(job, settings)
    metadata["ownerReferences"] = [owner_reference(job.name, job_uid)]
    return config_map(files, metadata)


def indexed_job_manifest(job: IndexedJob, settings: Settings) -> Manifest:
    """The Indexed Job: one pod per snippet, ``indexed_parallelism`` at once, one try per index."""
    spec = {
        "completionMode": "Indexed",
        "completions": len(job.ids),
        "parallelism": min(settings.indexed_parallelism, len(job.ids)),
        "backoffLimitPerIndex": 0,
        "activeDeadlineSeconds": indexed_deadline_seconds(job, settings),
        "podFailurePolicy": pod_failure_policy("FailIndex"),
    }
    command = runner_command(POD_PYTHON, INDEXED_SPEC)
    pod = pod_spec(job.template, settings, job.name, command, job.longest_timeout)
    return _job(_indexed_metadata(job, settings), spec, pod, settings, pod_annotations=False)


def data_size(files: dict[str, bytes]) -> int:
    """Bytes ``files`` take in a ConfigMap (binary ones base64-encoded)."""
    size = 0
    for key, content in files.items():
        try:
            content.decode("utf-8")
            size += len(key) + len(content)
        except UnicodeDecodeError:
            size += len(key) + 4 * math.ceil(len(content) / 3)
    return size


# -- the warm path (agent-sandbox, kubernetes-sigs/agent-sandbox) --------------------------

CLAIMS_GROUP = "extensions.agents.x-k8s.io"
CLAIMS_VERSION = "v1alpha1"
CLAIMS = "sandboxclaims"
"""SandboxClaim, SandboxTemplate and SandboxWarmPool are v1alpha1 in agent-sandbox up to v0.4 and
served (deprecated, converted) from v0.5."""
WARM_SHAPE = ExecutionRequest(code="pass")
"""The resources of warm sandboxes: the default request's. Requests of another shape run as Jobs."""
CLAIM_BACKSTOP_MARGIN_SECONDS = 30
"""Slack past the claim timeout and the deadline before a claim's shutdownTime (with the janitor grace)."""


def _amounts(request: ExecutionRequest) -> tuple[object, ...]:
    fields = (request.cpu_requested, request.mem_requested, request.cpu_limit, request.mem_limit)
    return tuple(parse_quantity(value) for value in fields)


def fits_warm(request: ExecutionRequest) -> bool:
    """Whether ``request`` asks for exactly the resources of a warm sandbox."""
    return _amounts(request) == _amounts(WARM_SHAPE)


def runs_warm(request: ExecutionRequest, settings: Settings) -> bool:
    """Whether ``request`` goes to a warm sandbox: placed ``warm`` (or by default, per
    ``kubernetes_mode``) and of the warm sandboxes' shape; any other runs as a Job."""
    placement = request.placement or settings.kubernetes_mode
    return placement == "warm" and fits_warm(request)


def warm_pod_spec(settings: Settings) -> Manifest:
    """A warm sandbox pod: the Job pod's hardening, the default shape, the runner's bootstrap on stdin.

    ``stdinOnce``: the pod's stdin closes when the one attach that delivers its job ends, so a
    pod takes at most one job; with ``restartPolicy: Never`` it then ends for good. No
    ``activeDeadlineSeconds``: the pod waits in the pool for as long as it takes (the kubelet would
    count a deadline from the pod's start); once its job comes, the runner keeps the deadline, and
    the claim's ``shutdownTime`` is the backstop.
    """
    spec = pod_spec(WARM_SHAPE, settings, "", attached_command(POD_PYTHON))
    del spec["activeDeadlineSeconds"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != FILES_VOLUME]
    container = spec["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != FILES_VOLUME]
    container.update(stdin=True, stdinOnce=True, tty=False)
    return spec


def sandbox_template_manifest(settings: Settings) -> Manifest:
    """The SandboxTemplate of warm sandboxes: sandq's pod, and no network at all.

    ``networkPolicy: {}`` makes agent-sandbox's shared policy deny all traffic both ways; left
    out, its default would allow egress to the internet (and set public DNS servers).
    """
    return {
        "apiVersion": f"{CLAIMS_GROUP}/{CLAIMS_VERSION}",
        "kind": "SandboxTemplate",
        "metadata": {
            "name": settings.sandbox_template,
            "namespace": settings.namespace,
            "labels": {MANAGED_BY: MANAGED_BY_VALUE},
        },
        "spec": {
            "podTemplate": {
                "metadata": {"labels": {MANAGED_BY: MANAGED_BY_VALUE}},
                "spec": warm_pod_spec(settings),
            },
            "networkPolicyManagement": "Managed",
            "networkPolicy": {},
            "envVarsInjectionPolicy": "Disallowed",
            "service": False,
        },
    }


def claim_deadline_seconds(request: ExecutionRequest, settings: Settings) -> float:
    """Longest a claim can be in use: waiting for its sandbox, then the run and the kill grace."""
    return settings.warm_claim_timeout_seconds + run_deadline_seconds(request, settings)


def claim_manifest(
    request: ExecutionRequest, settings: Settings, execution_id: str, at: datetime
) -> Manifest:
    """The SandboxClaim of one execution, named as its Job would be, created at ``at``.

    ``warmpool`` is always set: agent-sandbox v0.5+ converts a v1alpha1 claim without it to a
    shadow pool. ``lifecycle`` is the backstop for a worker that dies holding it: agent-sandbox
    deletes the claim (and its sandbox) past the deadline plus the janitor's grace.
    """
    slack = CLAIM_BACKSTOP_MARGIN_SECONDS + settings.janitor_grace_seconds
    expires = at + timedelta(seconds=math.ceil(claim_deadline_seconds(request, settings) + slack))
    return {
        "apiVersion": f"{CLAIMS_GROUP}/{CLAIMS_VERSION}",
        "kind": "SandboxClaim",
        "metadata": _metadata(request, settings, execution_id),
        "spec": {
            "sandboxTemplateRef": {"name": settings.sandbox_template},
            "warmpool": settings.warm_pool,
            "lifecycle": {"shutdownTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "shutdownPolicy": "Delete"},
        },
    }
