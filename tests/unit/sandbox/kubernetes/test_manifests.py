"""The manifests: valid Kubernetes objects (1.30, 1.33, strict), PSS restricted, deterministic."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient, V1ConfigMap, V1Job

from sandq.contract import ExecutionRequest, File
from sandq.sandbox.kubernetes import dry_run_yaml
from sandq.sandbox.kubernetes.dry_run import manifests
from sandq.sandbox.kubernetes.manifests import (
    MANAGED_BY,
    POD_PYTHON,
    TMP_VOLUME,
    claim_manifest,
    configmap_manifest,
    fits_warm,
    job_manifest,
    labels,
    object_name,
    runs_warm,
    sandbox_template_manifest,
)
from sandq.sandbox.protocol import MOUNT_DIR, attached_command, sandbox_files
from sandq.settings import Settings

SETTINGS = Settings()
REQUEST = ExecutionRequest(
    code="print('hello')\n", tenant="acme", timeout_seconds=30,
    input_files=[
        File(name="data/in.csv", content=b"a,b\n1,2\n"),
        File(name="blob.bin", content=b"\xff\x00\xfe"),
    ],
)


def _as_model(obj: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through the official client's models: ``sanitize_for_serialization(model)``."""
    client = ApiClient()
    model_type = {"Job": V1Job, "ConfigMap": V1ConfigMap}[obj["kind"]]
    model = client.deserialize(json.dumps(obj), model_type, "application/json")
    result: dict[str, Any] = client.sanitize_for_serialization(model)
    return result


@pytest.mark.parametrize("version", ["1.30", "1.33"])
@pytest.mark.parametrize("kind", ["Job", "ConfigMap"])
def test_manifests_validate_strict(version: str, kind: str) -> None:
    for request in (REQUEST, ExecutionRequest(code="x = 1")):
        obj = {m["kind"]: m for m in manifests(request, SETTINGS, "exec-1")}[kind]
        kubernetes_validate.validate(_as_model(obj), version, strict=True)
        kubernetes_validate.validate(obj, version, strict=True)


def test_validation_can_fail() -> None:
    job = job_manifest(REQUEST, SETTINGS, "exec-1")
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.33", strict=True)


def test_pod_security_standards_restricted() -> None:
    """The restricted profile's rules, checked one by one on the pod template."""
    pod = job_manifest(REQUEST, SETTINGS, "exec-1")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65534 and psc["runAsGroup"] == 65534
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    allowed_volumes = {"configMap", "emptyDir", "secret", "projected", "downwardAPI", "csi", "ephemeral",
                       "persistentVolumeClaim"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed_volumes
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
        assert sc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert sc["readOnlyRootFilesystem"] is True
        assert "ports" not in container or all("hostPort" not in p for p in container["ports"])
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_job_spec_shape() -> None:
    job = job_manifest(REQUEST, SETTINGS, "exec-1")
    spec = job["spec"]
    # The pod's deadline: the timeout, the kill grace in which the runner reports, and the start-up
    # (the kubelet counts it from the pod's start on its node). The Job's: room for scheduling and
    # one more pod, after an eviction and the Job controller's backoff.
    pod_deadline = 30 + 2 + 120
    assert spec["template"]["spec"]["activeDeadlineSeconds"] == pod_deadline
    assert spec["activeDeadlineSeconds"] == 2 * pod_deadline + 120 + 10
    assert spec["backoffLimit"] == 0
    rules = spec["podFailurePolicy"]["rules"]
    ignore = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[0] == ignore
    assert spec["ttlSecondsAfterFinished"] == SETTINGS.job_ttl_seconds
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["nodeSelector"] == {"sandbox.gke.io/runtime": "gvisor"}
    assert pod["tolerations"][0]["key"] == "sandbox.gke.io/runtime"
    container = pod["containers"][0]
    assert container["image"] == "python:3.11-slim"
    assert set(container["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory", "ephemeral-storage"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[MOUNT_DIR]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"] == {"sizeLimit": SETTINGS.tmp_size, "medium": "Memory"}
    assert volumes[mounts[MOUNT_DIR]["name"]]["configMap"]["name"] == object_name("exec-1")
    assert spec["template"]["metadata"]["labels"] == job["metadata"]["labels"]


def test_configurable_runtime_and_uid() -> None:
    settings = Settings(runtime_class=None, node_selector={}, tolerations=[], sandbox_uid=1234,
                        image="registry.example/py:1", tmp_medium="")
    pod = job_manifest(REQUEST, settings, "e")["spec"]["template"]["spec"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]  # on the node's disk
    assert "runtimeClassName" not in pod and "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["securityContext"]["runAsUser"] == 1234
    assert pod["containers"][0]["image"] == "registry.example/py:1"


def test_configmap_carries_the_exact_sandbox_files() -> None:
    cm = configmap_manifest(REQUEST, SETTINGS, "exec-1", "uid-1")
    files = {k: v.encode() for k, v in cm["data"].items()}
    files.update({k: base64.b64decode(v) for k, v in cm.get("binaryData", {}).items()})
    assert files == sandbox_files(REQUEST, SETTINGS)
    assert cm["binaryData"].keys() == {"in-1"}
    assert cm["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": object_name("exec-1"), "uid": "uid-1"}]


def test_names_and_labels_are_deterministic() -> None:
    assert object_name("abc-123") == "sq-abc-123"
    long_id = "A" * 100
    assert object_name(long_id) == object_name(long_id)
    assert len(object_name(long_id)) <= 63 and object_name(long_id) != object_name("B" * 100)
    assert object_name("Upper_Case") != object_name("upper-case")
    assert job_manifest(REQUEST, SETTINGS, "x") == job_manifest(REQUEST, SETTINGS, "x")
    want = {MANAGED_BY: "sandq", "sandq.dev/execution": "x", "sandq.dev/tenant": "acme"}
    assert labels(REQUEST, "x") == want
    for name in (object_name(long_id), object_name("a-b")):
        kubernetes_validate.validate(job_manifest(REQUEST, SETTINGS, name), "1.33", strict=True)


def test_dry_run_yaml_round_trips() -> None:
    text = dry_run_yaml(REQUEST, SETTINGS, "exec-1")
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["Job", "ConfigMap"]
    assert docs == manifests(REQUEST, SETTINGS, "exec-1")
    assert "print('hello')" in text


# ---------------------------------------------------------------------------- the warm path


def test_only_the_pools_shape_placed_warm_runs_warm() -> None:
    default = ExecutionRequest(code="x = 1")
    same = ExecutionRequest(code="x = 1", cpu_limit="0.5", mem_limit="536870912")  # 500m, 512Mi
    assert fits_warm(default) and fits_warm(same)
    assert not fits_warm(ExecutionRequest(code="x = 1", mem_limit="1Gi"))
    assert not fits_warm(ExecutionRequest(code="x = 1", cpu_requested="100m"))
    warm_mode = SETTINGS.model_copy(update={"kubernetes_mode": "warm"})
    assert runs_warm(default, warm_mode) and not runs_warm(default, SETTINGS)
    assert runs_warm(default.model_copy(update={"placement": "warm"}), SETTINGS)
    assert not runs_warm(default.model_copy(update={"placement": "job"}), warm_mode)
    assert not runs_warm(ExecutionRequest(code="x = 1", mem_limit="1Gi", placement="warm"), warm_mode)


def test_claim_names_the_pool_and_expires_past_every_deadline() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    claim = claim_manifest(REQUEST, SETTINGS, "exec-1", at)
    assert claim["metadata"]["name"] == object_name("exec-1")
    assert claim["metadata"]["labels"] == labels(REQUEST, "exec-1")
    assert claim["metadata"]["annotations"] == {"sandq.dev/execution-id": "exec-1"}
    spec = claim["spec"]
    assert spec["sandboxTemplateRef"] == {"name": SETTINGS.sandbox_template}
    assert spec["warmpool"] == SETTINGS.warm_pool, "v0.5+ converts a claim without it to a shadow pool"
    expires = datetime.fromisoformat(spec["lifecycle"]["shutdownTime"].replace("Z", "+00:00"))
    slack = SETTINGS.warm_claim_timeout_seconds + 30 + 2 + SETTINGS.janitor_grace_seconds
    assert (expires - at).total_seconds() == 30 + slack  # timeout + claim wait + kill grace + margin + grace
    assert spec["lifecycle"]["shutdownPolicy"] == "Delete"


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_warm_pod_is_the_job_pod_waiting_on_stdin(version: str) -> None:
    template = sandbox_template_manifest(SETTINGS)
    pod = template["spec"]["podTemplate"]["spec"]
    job_pod = job_manifest(ExecutionRequest(code="x = 1"), SETTINGS, "e")["spec"]["template"]["spec"]
    container, job_container = pod["containers"][0], job_pod["containers"][0]
    assert container["command"] == attached_command(POD_PYTHON)
    assert (container["stdin"], container["stdinOnce"], container["tty"]) == (True, True, False)
    assert pod["volumes"] == [v for v in job_pod["volumes"] if v["name"] == TMP_VOLUME]  # medium, size
    assert "activeDeadlineSeconds" not in pod, "a pool's pod waits as it must; the runner times the run"
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"], f"no {MOUNT_DIR}: all on stdin"
    for key in ("securityContext", "resources", "env", "image", "workingDir"):
        assert container[key] == job_container[key], key
    for key in ("securityContext", "runtimeClassName", "nodeSelector", "tolerations", "restartPolicy",
                "automountServiceAccountToken", "enableServiceLinks", "terminationGracePeriodSeconds"):
        assert pod[key] == job_pod[key], key
    assert template["spec"]["networkPolicy"] == {}, "else agent-sandbox's default allows internet egress"
    wrapped = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "warm"}, "spec": pod}
    kubernetes_validate.validate(wrapped, version, strict=True)


def test_dry_run_of_a_warm_request_shows_the_template_and_the_claim() -> None:
    request = ExecutionRequest(code="x = 1", placement="warm")
    docs = list(yaml.safe_load_all(dry_run_yaml(request, SETTINGS, "exec-1")))
    assert [d["kind"] for d in docs] == ["SandboxTemplate", "SandboxClaim"]
    assert docs[0] == sandbox_template_manifest(SETTINGS)
