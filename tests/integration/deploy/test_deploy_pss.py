"""The Pod Security Standards checker, and the pods of every overlay against it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from manifests import OVERLAYS, SANDBOX_NAMESPACE, WARM_OVERLAYS, WORKER_NAMESPACE, one, render
from pss import check, pod_of, runs_pods

RESTRICTED_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "ok"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "c",
                "image": "python:3.11-slim",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    },
}


def mutated(path: str, value: Any) -> dict[str, Any]:
    """RESTRICTED_POD with ``value`` at a dotted ``path`` (numbers index lists)."""
    pod = copy.deepcopy(RESTRICTED_POD)
    *parents, last = path.split(".")
    node: Any = pod
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return pod


def test_a_restricted_pod_passes() -> None:
    assert check(RESTRICTED_POD, "restricted") == []
    assert check(RESTRICTED_POD, "baseline") == []


BASELINE_BREACHES = [
    ("spec.hostNetwork", True),
    ("spec.hostPID", True),
    ("spec.hostIPC", True),
    ("spec.containers.0.securityContext.privileged", True),
    ("spec.containers.0.securityContext.capabilities.add", ["SYS_ADMIN"]),
    ("spec.containers.0.ports", [{"containerPort": 80, "hostPort": 80}]),
    ("spec.volumes", [{"name": "h", "hostPath": {"path": "/"}}]),
    ("spec.securityContext.seccompProfile", {"type": "Unconfined"}),
    ("spec.containers.0.securityContext.seccompProfile", {"type": "Unconfined"}),
    ("spec.containers.0.securityContext.appArmorProfile", {"type": "Unconfined"}),
    ("spec.containers.0.securityContext.procMount", "Unmasked"),
    ("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
    ("spec.securityContext.seLinuxOptions", {"type": "spc_t"}),
    ("spec.securityContext.windowsOptions", {"hostProcess": True}),
    ("metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}),
    ("spec.initContainers", [{"name": "i", "image": "x", "securityContext": {"privileged": True}}]),
]

RESTRICTED_ONLY_BREACHES = [
    ("spec.containers.0.securityContext.allowPrivilegeEscalation", True),
    ("spec.containers.0.securityContext.capabilities", {}),
    ("spec.containers.0.securityContext.capabilities.add", ["CHOWN"]),
    ("spec.securityContext.runAsNonRoot", False),
    ("spec.containers.0.securityContext.runAsNonRoot", False),
    ("spec.containers.0.securityContext.runAsUser", 0),
    ("spec.securityContext.seccompProfile", {}),
    ("spec.volumes", [{"name": "n", "nfs": {"server": "x", "path": "/"}}]),
    ("spec.ephemeralContainers", [{"name": "e", "image": "x"}]),
]


@pytest.mark.parametrize(("path", "value"), BASELINE_BREACHES)
def test_baseline_breaches_are_caught(path: str, value: Any) -> None:
    pod = mutated(path, value)
    assert check(pod, "baseline"), f"{path}={value} passed baseline"
    assert check(pod, "restricted"), f"{path}={value} passed restricted"


@pytest.mark.parametrize(("path", "value"), RESTRICTED_ONLY_BREACHES)
def test_restricted_breaches_are_caught(path: str, value: Any) -> None:
    pod = mutated(path, value)
    assert check(pod, "restricted"), f"{path}={value} passed restricted"
    assert check(pod, "baseline") == [], f"{path}={value} is allowed by baseline"


def test_pod_templates_are_found() -> None:
    job = {"kind": "Job", "spec": {"template": RESTRICTED_POD}}
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": RESTRICTED_POD}}}}
    for obj in (job, cron, RESTRICTED_POD["spec"]):
        assert pod_of(obj)[1] is RESTRICTED_POD["spec"]
    with pytest.raises(ValueError, match="runs no pod"):
        pod_of({"kind": "Service"})
    with pytest.raises(ValueError, match="level"):
        check(RESTRICTED_POD, "privileged")


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(
    ("kind", "name"),
    [("Deployment", "sandq-worker"), ("Deployment", "sandq-gateway"), ("StatefulSet", "redis")],
)
def test_worker_gateway_and_redis_pass_restricted(overlay: str, kind: str, name: str) -> None:
    obj = one(render(overlay), kind, name)
    assert check(obj, "baseline") == []
    assert check(obj, "restricted") == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_passes_its_namespace_level(overlay: str) -> None:
    objects = render(overlay)
    levels = {
        o["metadata"]["name"]: o["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        for o in objects
        if o["kind"] == "Namespace"
    }
    assert levels[SANDBOX_NAMESPACE] == "restricted"
    assert levels[WORKER_NAMESPACE] in {"baseline", "restricted"}
    workloads = [o for o in objects if runs_pods(o)]
    assert len(workloads) == 3 + (overlay in WARM_OVERLAYS)  # worker, gateway, Redis (and the warm template)
    for obj in workloads:
        assert check(obj, levels[obj["metadata"]["namespace"]]) == [], obj["metadata"]["name"]
