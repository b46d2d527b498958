"""The Role in deploy/ grants exactly what the backend calls at the stand-in: no missing, no extra verb.

The scenarios below make every call the backend and the janitor ever make, on the Job path and
(with warm sandboxes, ``deploy/overlays/gke-warm``) on the warm path too; besides, every
Kubernetes test's environment fails if any call needed a permission beyond the Role
(``tests.k8s_harness.env``), so no test depends on another having run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandq.contract import ExecutionRequest, now
from sandq.sandbox.kubernetes import REQUIRED_PERMISSIONS, run_janitor
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.creating import create_or_adopt, launch
from sandq.sandbox.kubernetes.manifests import EXECUTION_ID_ANNOTATION, claim_manifest
from sandq.sandbox.kubernetes.permissions import WARM_PERMISSIONS
from sandq.sandbox.kubernetes.warm import _claims_api
from tests.k8s_harness.env import Env, kubernetes_env

REPO = Path(__file__).resolve().parents[3]


def _scenario(env: Env) -> None:
    api = KubeApi(env.settings)
    try:
        launch(api, ExecutionRequest(code="print(1)"), "rbac")  # a worker that crashed
    finally:
        api.close()
    backend = env.backend()
    try:
        backend.run("rbac", ExecutionRequest(code="print(1)"))  # redelivery: 409 -> get
        backend.run("rbac-2", ExecutionRequest(code="print(2)"))
    finally:
        backend.close()
    run_janitor(env.settings)


def _warm_scenario(env: Env) -> None:
    """A warm worker: Jobs for other shapes (the Job path's scenario), claims for the pool's."""
    _scenario(env)
    request = ExecutionRequest(code="print(1)")
    api = KubeApi(env.settings)
    try:  # a worker that crashed holding its claim
        body = claim_manifest(request, env.settings, "rbac-warm", now())
        create_or_adopt(api, "SandboxClaim", _claims_api(api, "create"), _claims_api(api, "get"), body,
                        EXECUTION_ID_ANNOTATION)
    finally:
        api.close()
    backend = env.backend(kubernetes_mode="warm")
    try:
        backend.run("rbac-warm", request)  # redelivery: 409 -> get
        backend.run("rbac-warm-2", request)
    finally:
        backend.close()


def _rendered_role(overlay: str = "gke") -> set[tuple[str, str, str]]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is needed to render deploy/ (kubectl kustomize)"
    out = subprocess.run(
        [kubectl, "kustomize", str(REPO / "deploy/overlays" / overlay)], capture_output=True, text=True,
        check=True,
    ).stdout
    docs: list[Any] = list(yaml.safe_load_all(out))
    roles = [d for d in docs if d and d.get("kind") == "Role" and d["metadata"]["name"] == "sandq-worker"]
    assert len(roles) == 1, "exactly one sandq-worker Role"
    cluster_roles = [d for d in docs if d and d.get("kind") == "ClusterRole"]
    assert not [d for d in cluster_roles if "sandq-worker" in d["metadata"]["name"]]
    return {
        (group, resource, verb)
        for rule in roles[0]["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


@pytest.mark.timeout(60)
def test_called_permissions_are_exactly_the_required_set(env: Env) -> None:
    _scenario(env)
    called = {c.permission for c in env.calls}
    assert called == REQUIRED_PERMISSIONS, (sorted(called - REQUIRED_PERMISSIONS),
                                            sorted(REQUIRED_PERMISSIONS - called))


def test_deploy_role_grants_exactly_what_is_called() -> None:
    granted = _rendered_role()
    assert granted == REQUIRED_PERMISSIONS, {"missing": sorted(REQUIRED_PERMISSIONS - granted),
                                             "extra": sorted(granted - REQUIRED_PERMISSIONS)}


@pytest.mark.timeout(120)
def test_warm_path_calls_are_exactly_the_warm_overlays_role() -> None:
    with kubernetes_env(warm_pool=2) as env:
        _warm_scenario(env)
        called = {c.permission for c in env.calls}
    assert called == REQUIRED_PERMISSIONS | WARM_PERMISSIONS, sorted(
        called ^ (REQUIRED_PERMISSIONS | WARM_PERMISSIONS))
    assert _rendered_role("gke-warm") == called
