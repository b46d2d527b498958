"""The workers' RBAC: exactly the Kubernetes backend's API calls, only in the sandbox namespace."""

from __future__ import annotations

import pytest
from manifests import (
    DEPLOY,
    OVERLAYS,
    SANDBOX_NAMESPACE,
    WARM_OVERLAYS,
    WORKER_NAMESPACE,
    WORKER_SERVICE_ACCOUNT,
    find,
    load_yaml_file,
    one,
    render,
)

from sandq.sandbox.kubernetes.permissions import REQUIRED_PERMISSIONS, WARM_PERMISSIONS

# The one list to update: the backend's own (apiGroup, resource, verb) set.
BACKEND_API_CALLS: frozenset[tuple[str, str, str]] = REQUIRED_PERMISSIONS

CLUSTER_WIDE_KINDS = {"ClusterRole", "ClusterRoleBinding"}


def granted(role: dict) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) a Role grants; wildcards and names are refused."""
    out = set()
    for rule in role.get("rules", []):
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    out.add((group, resource, verb))
    return out


def test_backend_list_is_the_documented_one() -> None:
    assert {
        ("", "configmaps", "create"),
        *{("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")},
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
    } == BACKEND_API_CALLS


def test_rbac_file_grants_exactly_the_backend_calls() -> None:
    objects = load_yaml_file(DEPLOY / "base" / "rbac.yaml")
    assert {o["kind"] for o in objects} == {"Role", "RoleBinding"}
    role = one(objects, "Role", "sandq-worker")
    assert role["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert granted(role) == BACKEND_API_CALLS


def test_an_extra_verb_is_noticed() -> None:
    role = one(load_yaml_file(DEPLOY / "base" / "rbac.yaml"), "Role", "sandq-worker")
    role["rules"][0]["verbs"].append("delete")
    assert granted(role) != BACKEND_API_CALLS
    role["rules"][0]["verbs"] = ["*"]
    with pytest.raises(AssertionError, match="wildcard"):
        granted(role)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_rbac(overlay: str) -> None:
    objects = render(overlay)
    assert not [o for o in objects if o["kind"] in CLUSTER_WIDE_KINDS], "nothing cluster-wide"
    (role,) = find(objects, "Role")
    assert role["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert granted(role) == BACKEND_API_CALLS | (WARM_PERMISSIONS if overlay in WARM_OVERLAYS else set())
    (binding,) = find(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": WORKER_SERVICE_ACCOUNT, "namespace": WORKER_NAMESPACE}
    ]
    account = one(objects, "ServiceAccount", WORKER_SERVICE_ACCOUNT)
    assert account["metadata"]["namespace"] == WORKER_NAMESPACE
    deployment = one(objects, "Deployment", "sandq-worker")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == WORKER_SERVICE_ACCOUNT


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_tokens_where_not_needed(overlay: str) -> None:
    objects = render(overlay)
    sandbox_default = one(objects, "ServiceAccount", "default")
    assert sandbox_default["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert sandbox_default["automountServiceAccountToken"] is False
    redis = one(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]
    assert redis["automountServiceAccountToken"] is False
