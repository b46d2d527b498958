"""Every overlay renders, and every object it makes is valid Kubernetes (or a known CRD)."""

from __future__ import annotations

import base64
import copy

import jsonschema
import kubernetes_validate
import pytest
from kombu.transport.redis import Channel
from kubernetes.utils.quantity import parse_quantity
from manifests import (
    CRD_SCHEMAS,
    DEPLOY,
    OVERLAYS,
    REDIS_SECRET,
    SANDBOX_NAMESPACE,
    WORKER_NAMESPACE,
    WORKER_SERVICE_ACCOUNT,
    find,
    kustomize,
    load_yaml_file,
    one,
    render,
    schema,
)

from sandq.broker.routing import HANDED_OFF_PRIORITY, PRIORITY_VALUES
from sandq.settings import Settings

K8S_VERSIONS = ("1.30", "1.33")
CLUSTER_SCOPED = {"Namespace", "RuntimeClass"}


def validate_object(obj: dict, version: str) -> None:
    """kubernetes-validate (strict) for built-in kinds, our JSON schemas for CRDs; a SandboxTemplate's
    pod also as a v1 Pod, strict."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(obj, schema(CRD_SCHEMAS[key]), format_checker=jsonschema.FormatChecker())
    else:
        kubernetes_validate.validate(obj, version, strict=True)
    if obj["kind"] == "SandboxTemplate":
        template = obj["spec"]["podTemplate"]
        metadata = {"name": "warm", "namespace": obj["metadata"]["namespace"], **template.get("metadata", {})}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
        kubernetes_validate.validate(pod, version, strict=True)


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def worker_container(objects: list[dict]) -> dict:
    deployment = one(objects, "Deployment", "sandq-worker")
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(overlay: str) -> None:
    objects = render(overlay)
    assert objects
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "duplicate objects"


def test_base_renders() -> None:
    assert kustomize(DEPLOY / "base")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(overlay: str, version: str) -> None:
    for obj in render(overlay):
        validate_object(obj, version)


def test_unknown_kinds_are_not_waved_through() -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_object({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}}, "1.33")


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(one(render("gke"), "Deployment", "sandq-worker"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"exec": {"command": ["x"]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deployment, "1.33")


def test_crd_schema_catches_a_broken_scaledobject() -> None:
    scaled = copy.deepcopy(one(render("gke"), "ScaledObject", "sandq-worker"))
    del scaled["spec"]["triggers"][0]["metadata"]["listName"]
    with pytest.raises(jsonschema.ValidationError):
        validate_object(scaled, "1.33")
    scaled = copy.deepcopy(one(render("gke"), "ScaledObject", "sandq-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["password"] = "in-clear"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(scaled, "1.33")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespaces(overlay: str) -> None:
    objects = render(overlay)
    namespaces = {o["metadata"]["name"] for o in find(objects, "Namespace")}
    assert namespaces == {WORKER_NAMESPACE, SANDBOX_NAMESPACE}
    for obj in objects:
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"].get("namespace") in {WORKER_NAMESPACE, SANDBOX_NAMESPACE}, obj["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sandbox_namespace_is_restricted(overlay: str) -> None:
    labels = one(render(overlay), "Namespace", SANDBOX_NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_runtimeclass_only_outside_gke() -> None:
    runtime = one(render("dev"), "RuntimeClass", "gvisor")
    assert runtime["handler"] == "runsc"
    assert not find(render("gke"), "RuntimeClass"), "GKE Sandbox provides its own RuntimeClass"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_deployment(overlay: str) -> None:
    objects = render(overlay)
    deployment = one(objects, "Deployment", "sandq-worker")
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(objects)
    env = env_of(container)
    assert pod["serviceAccountName"] == WORKER_SERVICE_ACCOUNT
    assert container["command"] + container["args"] == ["sandq", "worker"]
    assert env["SANDQ_BACKEND"] == "kubernetes"
    assert env["SANDQ_NAMESPACE"] == SANDBOX_NAMESPACE
    assert env["SANDQ_REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis.sandq.svc:6379/0"
    password = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": REDIS_SECRET, "key": "password"}
    assert {"name": "metrics", "containerPort": 9808, "protocol": "TCP"} in container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["sandq", "healthcheck"]
        assert container[probe]["timeoutSeconds"] > float(command[command.index("--timeout") + 1])
    # Long enough for a typical (default) execution to finish after SIGTERM.
    default_timeout = 300
    assert default_timeout < pod["terminationGracePeriodSeconds"] <= Settings().max_timeout_seconds + 60
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    zones = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= zones
    pdb = one(objects, "PodDisruptionBudget", "sandq-worker")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"
    ].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_references_are_defined_first(overlay: str) -> None:
    """$(VAR) in an env value expands only if VAR comes earlier in the list."""
    seen: set[str] = set()
    for entry in worker_container(render(overlay))["env"]:
        value = entry.get("value") or ""
        for name in [part.split(")")[0] for part in value.split("$(")[1:]]:
            assert name in seen, f"{entry['name']} uses $({name}) before it is defined"
        seen.add(entry["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_env_parses_as_settings(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(worker_container(render(overlay)))
    for name, value in env.items():
        if name.startswith("SANDQ_") and value is not None and "$(" not in value:
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.backend == "kubernetes" and settings.runtime_class == "gvisor"
    if overlay.startswith("gke"):
        assert settings.node_selector == {"sandbox.gke.io/runtime": "gvisor"}
        assert settings.tolerations[0]["key"] == "sandbox.gke.io/runtime"
        assert settings.image.endswith("/sandq/sandq-sandbox:0.1.0")
    else:
        assert settings.node_selector == {} and settings.tolerations == []


def test_dev_worker_has_no_gke_specifics() -> None:
    objects = render("dev")
    env = env_of(worker_container(objects))
    assert env["SANDQ_NODE_SELECTOR"] == "{}" and env["SANDQ_TOLERATIONS"] == "[]"
    assert not find(objects, "ScaledObject") and not find(objects, "PodMonitoring")
    text = str(objects)
    assert "sandbox.gke.io" not in text and "premium-rwo" not in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis(overlay: str) -> None:
    objects = render(overlay)
    statefulset = one(objects, "StatefulSet", "redis")
    config = one(objects, "ConfigMap", "redis-config")["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in config and "appendfsync everysec" in config
    assert "maxmemory-policy noeviction" in config
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": REDIS_SECRET, "key": "password"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert one(objects, "Service", "redis")["spec"]["ports"][0]["port"] == 6379


def test_no_real_password_is_committed() -> None:
    assert not find(render("gke"), "Secret"), "the GKE Redis password and gateway secret are made out of band"
    secret = one(render("dev"), "Secret", REDIS_SECRET)
    assert secret["data"] == {"password": "c2FuZHEtZGV2"}  # "sandq-dev", documented as dev-only
    gateway = base64.b64decode(one(render("dev"), "Secret", "sandq-gateway")["data"]["secret"]).decode()
    assert "not-for-production" in gateway and len(gateway) >= 32
    assert {s["metadata"]["name"] for s in find(render("dev"), "Secret")} == {REDIS_SECRET, "sandq-gateway"}
    for path in DEPLOY.rglob("*.yaml"):
        kinds = [doc.get("kind") for doc in load_yaml_file(path) if isinstance(doc, dict)]
        assert "Secret" not in kinds, f"{path} holds a Secret"


def test_keda_scales_workers_on_the_queue() -> None:
    objects = render("gke")
    scaled = one(objects, "ScaledObject", "sandq-worker")
    deployment = one(objects, "Deployment", "sandq-worker")
    env = env_of(worker_container(objects))
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    triggers = scaled["spec"]["triggers"]
    queue = env["SANDQ_QUEUE"]
    assert queue == Settings().queue == "sandq"
    priorities = [HANDED_OFF_PRIORITY, *PRIORITY_VALUES.values()]  # kombu's per-priority lists:
    lists = {f"{queue}{Channel.sep}{p}" if p else queue for p in priorities}
    assert {t["metadata"]["listName"] for t in triggers} == lists and len(triggers) == 3
    for trigger in triggers:
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listLength"] == env["SANDQ_CONCURRENCY"]
        assert trigger["metadata"]["address"] == "redis.sandq.svc:6379"
        auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"] == [
            {"parameter": "password", "name": REDIS_SECRET, "key": "password"}
        ]
    assert scaled["spec"]["minReplicaCount"] >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_apiserver_cidr_comes_from_the_overlay(overlay: str) -> None:
    built_on = {"gke-warm": "gke"}.get(overlay, overlay)  # an overlay on an overlay keeps its address
    lines = (DEPLOY / "overlays" / built_on / "apiserver.env").read_text().splitlines()
    (cidr,) = [line.split("=", 1)[1] for line in lines if line.startswith("APISERVER_CIDR=")]
    policy = one(render(overlay), "NetworkPolicy", "sandq-worker")
    rule = policy["spec"]["egress"][0]
    assert rule["to"] == [{"ipBlock": {"cidr": cidr}}]
    assert {p["port"] for p in rule["ports"]} == {443, 6443}
    assert not find(render(overlay), "ConfigMap", "sandq-deploy-params"), "build-time only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sandbox_limits_admit_the_largest_request(overlay: str) -> None:
    objects = render(overlay)
    settings = Settings()
    limit_range = one(objects, "LimitRange", "sandboxes")
    assert limit_range["metadata"]["namespace"] == SANDBOX_NAMESPACE
    container = next(item for item in limit_range["spec"]["limits"] if item["type"] == "Container")
    assert parse_quantity(container["max"]["cpu"]) >= parse_quantity(settings.max_cpu_limit)
    assert parse_quantity(container["max"]["memory"]) >= parse_quantity(settings.max_mem_limit)
    quota = one(objects, "ResourceQuota", "sandboxes")
    assert quota["metadata"]["namespace"] == SANDBOX_NAMESPACE
    hard = quota["spec"]["hard"]
    pool = max((s["spec"]["maxReplicaCount"] for s in find(objects, "ScaledObject")
                if s["spec"]["scaleTargetRef"].get("kind") == "SandboxWarmPool"), default=0)
    assert int(hard["pods"]) >= 10 * int(env_of(worker_container(objects))["SANDQ_CONCURRENCY"]) + pool
    assert parse_quantity(hard["limits.memory"]) >= 40 * parse_quantity(settings.max_mem_limit)
