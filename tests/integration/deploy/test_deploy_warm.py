"""Warm sandboxes in deploy/ (components/warm-sandboxes, components/keda-warm-pool, overlays/gke-warm):
the template is sandq's own pod, the pool and the workers agree on names, and agent-sandbox's custom
resources (the deployed ones and those a worker creates) pass the schemas kept in schemas/agent-sandbox/."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import jsonschema
import kubernetes_validate
import pytest
from manifests import SANDBOX_NAMESPACE, find, one, render, schema
from pss import check
from test_deploy_render import K8S_VERSIONS, env_of, validate_object, worker_container

from sandq.contract import ExecutionRequest
from sandq.sandbox.kubernetes.manifests import claim_manifest, sandbox_template_manifest
from sandq.settings import Settings

OVERLAY = "gke-warm"


def _worker_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The workers' settings, as the overlay's environment gives them."""
    for name, value in env_of(worker_container(render(OVERLAY))).items():
        if name.startswith("SANDQ_") and value is not None and "$(" not in value:
            monkeypatch.setenv(name, value)
    return Settings()


def test_the_template_is_the_workers_own_sandbox_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _worker_settings(monkeypatch)
    assert settings.kubernetes_mode == "warm"
    deployed = one(render(OVERLAY), "SandboxTemplate", settings.sandbox_template)
    built = sandbox_template_manifest(settings)
    assert deployed["spec"] == built["spec"], "regenerate with `sandq run --dry-run --placement warm`"
    assert deployed["metadata"]["namespace"] == settings.namespace == SANDBOX_NAMESPACE
    assert deployed["metadata"]["labels"].items() >= built["metadata"]["labels"].items()


def test_warm_sandboxes_get_no_network_and_pass_restricted() -> None:
    template = one(render(OVERLAY), "SandboxTemplate", "python-sandbox-template")
    spec = template["spec"]
    assert spec["networkPolicyManagement"] == "Managed" and spec["networkPolicy"] == {}, (
        "without networkPolicy agent-sandbox's default allows egress to the internet")
    assert spec["envVarsInjectionPolicy"] == "Disallowed" and spec["service"] is False
    assert check(template, "restricted") == []
    container = spec["podTemplate"]["spec"]["containers"][0]
    assert (container["stdin"], container["stdinOnce"], container.get("tty")) == (True, True, False)
    assert spec["podTemplate"]["spec"]["restartPolicy"] == "Never"


def test_pool_workers_and_keda_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _worker_settings(monkeypatch)
    objects = render(OVERLAY)
    pool = one(objects, "SandboxWarmPool", settings.warm_pool)
    assert pool["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert pool["spec"]["sandboxTemplateRef"] == {"name": settings.sandbox_template}
    assert pool["spec"]["replicas"] == 8, "the overlay sets the pool's size"
    (scaled,) = [s for s in find(objects, "ScaledObject") if s["metadata"]["namespace"] == SANDBOX_NAMESPACE]
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": pool["apiVersion"], "kind": "SandboxWarmPool", "name": pool["metadata"]["name"]}
    assert scaled["spec"]["minReplicaCount"] <= pool["spec"]["replicas"] <= scaled["spec"]["maxReplicaCount"]
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["kubernetes-workload"]
    assert not find(render("gke"), "SandboxWarmPool") and not find(render("dev"), "SandboxTemplate")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_what_a_worker_creates_passes_the_schemas(version: str) -> None:
    settings = Settings()
    claim = claim_manifest(ExecutionRequest(code="print(1)"), settings, "abc", datetime.now(UTC))
    validate_object(claim, version)
    validate_object(sandbox_template_manifest(settings), version)


def test_the_schemas_catch_mistakes() -> None:
    claim = claim_manifest(ExecutionRequest(code="print(1)"), Settings(), "abc", datetime.now(UTC))
    for mutate in (
        lambda c: c["spec"].update(warmPool="sandq-warm"),  # v1beta1 spelling in a v1alpha1 claim
        lambda c: c["spec"]["lifecycle"].update(shutdownPolicy="Remove"),
        lambda c: c["spec"]["lifecycle"].update(shutdownTime="tomorrow"),
        lambda c: c["spec"].pop("sandboxTemplateRef"),
    ):
        broken = copy.deepcopy(claim)
        mutate(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_object(broken, "1.33")
    pool = one(render(OVERLAY), "SandboxWarmPool", "sandq-warm")
    for field, value in (("replicas", -1), ("updateStrategy", {"type": "Rolling"})):
        broken = copy.deepcopy(pool)
        broken["spec"][field] = value
        with pytest.raises(jsonschema.ValidationError):
            validate_object(broken, "1.33")
    template = one(render(OVERLAY), "SandboxTemplate", "python-sandbox-template")
    broken = copy.deepcopy(template)
    broken["spec"]["networkPolicyManagement"] = "Manual"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema("agent-sandbox/sandboxtemplate.json"))
    broken = copy.deepcopy(template)
    broken["spec"]["podTemplate"]["spec"]["containers"][0]["stdinOnse"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(broken, "1.33")
