"""Kubernetes API requests per execution, by verb: sandq vs. ADK's GkeCodeExecutor.

All run against the same stand-in API server (kmock + the test harness's Job
controller and runsc kubelet) in the same process, on the same snippet:
sandq's single executions (one Job each), a sandq batch as Indexed Jobs, and
GkeCodeExecutor (ADK's own code, driven through its Job path). Prints JSON.

Usage: python benchmarks/k8s_api.py [--executions N] [--batch N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CODE = "print(sum(range(10)))"


def _by_verb(calls: list[Any], executions: int) -> dict[str, float]:
    counts = Counter(f"{c.verb} {c.resource}" for c in calls)
    return {key: round(n / executions, 2) for key, n in sorted(counts.items())}


def _summary(calls: list[Any], executions: int, seconds: float, outputs: list[str]) -> dict[str, Any]:
    writes = sum(1 for c in calls if c.verb in ("create", "patch", "update", "delete"))
    return {
        "executions": executions,
        "requests_per_execution": round(len(calls) / executions, 2),
        "writes_per_execution": round(writes / executions, 2),
        "watch_requests": sum(1 for c in calls if c.verb == "watch"),
        "by_verb_per_execution": _by_verb(calls, executions),
        "seconds_per_execution": round(seconds / executions, 3),
        "outputs_ok": all(o.strip() == "45" for o in outputs),
    }


def _sandq(running: Any, kubeconfig: Path, workdir: Path, executions: int) -> dict[str, Any]:
    from sandq.contract import ExecutionRequest
    from sandq.sandbox.kubernetes.backend import KubernetesBackend
    from tests.k8s_harness.env import NAMESPACE, make_settings

    settings = make_settings(kubeconfig, workdir, namespace=NAMESPACE)
    backend = KubernetesBackend(settings)
    first = len(running.api.calls)
    start = time.monotonic()
    outputs = []
    try:
        for i in range(executions):
            outputs.append(backend.run(f"bench-{i}", ExecutionRequest(code=CODE)).stdout)
    finally:
        backend.close()
    calls = running.api.calls[first:]
    result = _summary(calls, executions, time.monotonic() - start, outputs)
    result["per_worker_fixed"] = dict(Counter(f"{c.verb} {c.resource}" for c in calls if c.name is None))
    return result


def _sandq_indexed(running: Any, kubeconfig: Path, workdir: Path, executions: int) -> dict[str, Any]:
    from sandq.contract import ExecutionRequest, SandboxReport
    from sandq.sandbox.kubernetes.backend import KubernetesBackend
    from tests.k8s_harness.env import NAMESPACE, make_settings

    settings = make_settings(kubeconfig, workdir, namespace=NAMESPACE)
    backend = KubernetesBackend(settings)
    first = len(running.api.calls)
    start = time.monotonic()
    reports: dict[str, SandboxReport] = {}
    try:
        items = [(f"batch-{i}", ExecutionRequest(code=CODE)) for i in range(executions)]
        backend.run_batch(items, reports.__setitem__)
    finally:
        backend.close()
    calls = running.api.calls[first:]
    result = _summary(calls, executions, time.monotonic() - start, [r.stdout for r in reports.values()])
    result["indexed_jobs"] = sum(1 for c in calls if c.verb == "create" and c.resource == "jobs")
    result["parallelism"] = settings.indexed_parallelism
    result["per_worker_fixed"] = dict(Counter(f"{c.verb} {c.resource}" for c in calls if c.name is None))
    return result


def _gke(running: Any, kubeconfig: Path, executions: int) -> dict[str, Any]:
    from google.adk.code_executors.gke_code_executor import GkeCodeExecutor

    from tests.k8s_harness.env import NAMESPACE
    from tests.k8s_harness.standin import JOBS

    executor = GkeCodeExecutor(kubeconfig_path=str(kubeconfig), namespace=NAMESPACE, timeout_seconds=60)
    first = len(running.api.calls)
    start = time.monotonic()
    outputs = []
    for _ in range(executions):
        result = executor._execute_as_job(CODE, SimpleNamespace(invocation_id="bench"))
        outputs.append(result.stdout)
        # Its Jobs live on until ttlSecondsAfterFinished: stand in for the TTL controller now
        # (uncounted) to keep runs apart.
        for job in running.api.items(JOBS):
            running.run(running.api.remove(JOBS, NAMESPACE, job["metadata"]["name"]))
            running.run(running.api.collect_garbage(NAMESPACE, job["metadata"]["uid"]))
    calls = running.api.calls[first:]
    summary = _summary(calls, executions, time.monotonic() - start, outputs)
    summary["jobs_left_for_ttl_per_execution"] = 1.0  # it never deletes its Job (ttlSecondsAfterFinished)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="executions of the Indexed Job batch")
    args = parser.parse_args()
    from tests.k8s_harness.cluster import Cluster
    from tests.k8s_harness.standin import RunningStandIn

    workdir = Path(tempfile.mkdtemp(prefix="sandq-bench-"))
    running = RunningStandIn().start()
    cluster = Cluster(running, workdir / "cluster")
    kubeconfig = running.write_kubeconfig(workdir / "kubeconfig")
    try:
        report = {
            "sandq": _sandq(running, kubeconfig, workdir, args.executions),
            "sandq_indexed_batch": _sandq_indexed(running, kubeconfig, workdir, args.batch),
            "gke_code_executor": _gke(running, kubeconfig, args.executions),
        }
    finally:
        cluster.close()
        running.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
