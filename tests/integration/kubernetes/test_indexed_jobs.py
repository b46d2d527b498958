"""Batches as Indexed Jobs: manifests, splitting, and real runs against the stand-in (runsc pods)."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sandq.client.client import Client
from sandq.contract import ExecutionRequest, File, SandboxReport, Status
from sandq.sandbox.kubernetes.indexed import CONFIGMAP_BUDGET, plan
from sandq.sandbox.kubernetes.manifests import (
    EXECUTION_IDS_ANNOTATION,
    indexed_configmap_manifest,
    indexed_job_manifest,
)
from sandq.settings import Settings
from tests.conftest import RedisServer, WorkerProcess, make_settings
from tests.k8s_harness.env import Env
from tests.unit.sandbox.kubernetes.test_manifests import _as_model

SETTINGS = Settings()
ITEMS = [
    ("b-0", ExecutionRequest(code="print(0)", input_files=[File(name="x.bin", content=b"\xff\x00")])),
    ("b-1", ExecutionRequest(code="print(1)", timeout_seconds=60)),
    ("b-2", ExecutionRequest(code="print(2)")),
]
WRITES = {"create", "delete", "patch", "update"}


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_indexed_manifests_validate_strict(version: str) -> None:
    (job,) = plan(ITEMS, SETTINGS)
    for obj in (indexed_job_manifest(job, SETTINGS), indexed_configmap_manifest(job, SETTINGS, "uid-1")):
        kubernetes_validate.validate(_as_model(obj), version, strict=True)
        kubernetes_validate.validate(obj, version, strict=True)


def test_indexed_job_shape() -> None:
    settings = Settings(indexed_parallelism=2)
    (job,) = plan(ITEMS, settings)
    manifest = indexed_job_manifest(job, settings)
    spec = manifest["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 3 and spec["parallelism"] == 2
    assert spec["backoffLimitPerIndex"] == 0 and "backoffLimit" not in spec
    pod_deadline = 300 + 2 + 120  # the longest timeout, the kill grace, the start-up
    assert spec["template"]["spec"]["activeDeadlineSeconds"] == pod_deadline
    assert spec["activeDeadlineSeconds"] == (2 + 1) * pod_deadline + 120 + 10  # two waves and one more pod
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == "/sandq/spec-{index}.json"
    assert manifest["metadata"]["annotations"][EXECUTION_IDS_ANNOTATION] == '["b-0", "b-1", "b-2"]'
    cm = indexed_configmap_manifest(job, settings, "uid-1")
    assert set(cm["data"]) == {"runner.py", "main-0.py", "spec-0.json", "main-1.py", "spec-1.json",
                               "main-2.py", "spec-2.json"}
    assert set(cm["binaryData"]) == {"in-0-0"}
    assert '"code": "main-1.py"' in cm["data"]["spec-1.json"]


def test_pod_security_standards_restricted_on_indexed_pods() -> None:
    (job,) = plan(ITEMS, SETTINGS)
    pod = indexed_job_manifest(job, SETTINGS)["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_plan_splits_by_shape_count_and_configmap_size() -> None:
    settings = Settings(indexed_batch_size=4)
    items = [(f"s-{i}", ExecutionRequest(code="pass")) for i in range(10)]
    items.append(("big-mem", ExecutionRequest(code="pass", mem_limit="1Gi")))
    assert [len(j.ids) for j in plan(items, settings)] == [4, 4, 2, 1]
    big = "x = 1\n" * (400 * 1024 // 6)  # ~400 KiB of code: two fit under the budget, not three
    large = [(f"l-{i}", ExecutionRequest(code=big)) for i in range(5)]
    jobs = plan(large, SETTINGS)
    assert [len(j.ids) for j in jobs] == [2, 2, 1]
    for job in jobs:
        cm = indexed_configmap_manifest(job, SETTINGS, "uid")
        assert sum(len(k) + len(v.encode()) for k, v in cm["data"].items()) <= CONFIGMAP_BUDGET
    assert len({j.name for j in jobs}) == 3 and plan(large, SETTINGS)[0].name == jobs[0].name


def _run(env: Env, items: list[tuple[str, ExecutionRequest]], **overrides: Any) -> dict[str, SandboxReport]:
    backend = env.backend(**overrides)
    results: dict[str, SandboxReport] = {}
    try:
        backend.run_batch(items, results.__setitem__)
    finally:
        backend.close()
    return results


@pytest.mark.timeout(180)
def test_batch_of_ten_costs_three_writes_and_one_log_read_each(env: Env) -> None:
    items = [(f"ix-{i}", ExecutionRequest(code=f"print({i} * 3)")) for i in range(10)]
    items[3] = ("ix-3", ExecutionRequest(code="import sys\nprint('bad', file=sys.stderr)\nsys.exit(4)"))
    items[4] = ("ix-4", ExecutionRequest(
        code="print(open('/tmp/data.txt').read())", input_files=[File(name="data.txt", content=b"in-4")]))
    results = _run(env, items, indexed_parallelism=4)
    assert set(results) == {i for i, _ in items}
    for i in (0, 1, 2, 5, 6, 7, 8, 9):
        assert results[f"ix-{i}"].status == Status.SUCCEEDED, results[f"ix-{i}"]
        assert results[f"ix-{i}"].stdout == f"{i * 3}\n"
    assert results["ix-3"].status == Status.FAILED and results["ix-3"].exit_code == 4
    assert results["ix-3"].stderr == "bad\n"
    assert results["ix-4"].stdout == "in-4\n"
    verbs = Counter((c.resource, c.verb) for c in env.calls if c.name is not None)
    assert verbs == Counter({("jobs", "create"): 1, ("configmaps", "create"): 1, ("jobs", "delete"): 1,
                             ("pods/log", "get"): 10}), verbs
    assert sum(n for (_, verb), n in verbs.items() if verb in WRITES) == 3
    assert env.cluster.pods_started == 10


@pytest.mark.timeout(120)
def test_indexed_timeout_and_cancellation(env: Env) -> None:
    env.cluster.hold = True
    items = [(f"c-{i}", ExecutionRequest(code="pass", timeout_seconds=5)) for i in range(3)]
    backend = env.backend(start_timeout_seconds=1)
    results: dict[str, SandboxReport] = {}
    try:
        worker = threading.Thread(target=backend.run_batch, args=(items, results.__setitem__))
        worker.start()
        while env.cluster.held < 3:
            worker.join(0.05)
        assert backend.cancel("c-1")
        while "c-1" not in results:
            worker.join(0.05)
        assert results["c-1"].status == Status.CANCELLED
        worker.join(60)  # the others run into their pods' deadline
    finally:
        backend.close()
    assert results["c-0"].status == Status.TIMED_OUT and results["c-2"].status == Status.TIMED_OUT


@pytest.mark.timeout(240)
def test_indexed_batch_through_the_queue_stores_one_result_per_id(
    env: Env, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_server.url, tmp_path, backend="kubernetes", namespace=env.settings.namespace,
        kubeconfig_path=env.settings.kubeconfig_path, api_qps=200, api_burst=200, metrics_port=0,
        indexed_parallelism=3,
    )
    client = Client(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log", {"SANDQ_LOG_FORMAT": "text"})
    try:
        worker.wait_ready(client)
        requests: list[dict[str, Any]] = [{"code": f"print({i} + 1)"} for i in range(5)]
        requests.append({"code": "print(1)", "timeout_seconds": 0})  # rejected at once
        batch = client.submit_batch(requests, ids=[f"q-{i}" for i in range(6)], indexed=True)
        results = batch.results(timeout=180)
    finally:
        worker.stop()
        client.close()
    assert [r.stdout for r in results[:5]] == [f"{i + 1}\n" for i in range(5)]
    assert all(r.status == Status.SUCCEEDED and r.backend == "kubernetes" for r in results[:5])
    assert results[5].status == Status.REJECTED
    assert sum(1 for c in env.calls if c.resource == "jobs" and c.verb == "create") == 1
    assert "sandq.execute_indexed" in worker.log.read_text()
