"""Kubernetes warm path vs Job path: end-to-end latency of ``print(1)`` and API calls per execution.

One run, one worker, one stand-in: a real ``sandq worker`` (kubernetes backend) against the API
stand-in, whose kubelet runs Job pods in gVisor (runsc) and whose agent-sandbox keeps a warm pool
of gVisor sandboxes. Executions of ``print(1)`` are submitted open-loop (one every ``--interval``
seconds, whatever the earlier ones do), alternating between ``placement="job"`` and
``placement="warm"``, so that both paths see the same machine at the same time. Latency is from
``Client.submit`` to the result, as the client sees it. API calls are counted at the stand-in
per execution (its Job, ConfigMap, pod log, or its claim and its pod's attach), and the worker's
own (lists and watches, named nothing). The machine's load average is reported beside.

Usage: python benchmarks/k8s_warm.py [--executions 20] [--interval 1.0] [--pool 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WRITES = {"create", "delete", "patch", "update", "deletecollection"}
CODE = "print(1)"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _calls(calls: list[Any], ids: list[str], pods: dict[str, str | None]) -> dict[str, Any]:
    """Requests and writes per execution, counted by the names of what each execution touched."""
    from sandq.sandbox.kubernetes.manifests import object_name

    mine: Counter[str] = Counter()
    requests = writes = 0
    for execution_id in ids:
        names = {object_name(execution_id)}
        pod = pods.get(execution_id)
        if pod:
            names.add(pod)
        for call in calls:
            if call.name in names or (call.name or "").startswith(object_name(execution_id) + "-"):
                if call.resource == "pods/attach" and call.verb == "create":
                    continue  # the same request as its "get" (RBAC checks both on 1.35+)
                mine[f"{call.verb} {call.resource}"] += 1
                requests += 1
                writes += call.verb in WRITES and call.resource != "pods/attach"
    n = len(ids)
    return {
        "requests_per_execution": round(requests / n, 2),
        "writes_per_execution": round(writes / n, 2),
        "by_verb_per_execution": {key: round(count / n, 2) for key, count in sorted(mine.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20, help="per path")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between two submissions")
    parser.add_argument("--pool", type=int, default=4, help="warm pool replicas")
    args = parser.parse_args()
    from sandq.client.client import Client
    from sandq.contract import ExecutionRequest
    from tests.conftest import RedisServer, WorkerProcess, make_settings
    from tests.k8s_harness.env import kubernetes_env

    base = Path(tempfile.mkdtemp(prefix="sandq-bench-warm-"))
    redis_server = RedisServer(base)
    load_before = os.getloadavg()
    try:
        with kubernetes_env(warm_pool=args.pool) as env:
            keep = ("namespace", "kubeconfig_path", "api_backoff_seconds", "api_timeout_seconds",
                    "watch_timeout_seconds", "kill_grace_seconds", "api_qps", "api_burst")
            settings = make_settings(redis_server.url, base, backend="kubernetes", concurrency=8,
                                     **{name: getattr(env.settings, name) for name in keep})
            client = Client(settings)
            worker = WorkerProcess(settings, base / "worker.log", {"SANDQ_LOG_FORMAT": "text"})
            try:
                worker.wait_ready(client)
                for placement in ("job", "warm"):  # imports, connections, the watches
                    client.run(ExecutionRequest(code=CODE, placement=placement), timeout=120)
                first_call = len(env.calls)
                latencies: dict[str, list[float]] = {"job": [], "warm": []}
                ids: dict[str, list[str]] = {"job": [], "warm": []}
                sandboxes: dict[str, str | None] = {}
                ok: list[bool] = []
                threads = []

                def one(placement: str, execution_id: str) -> None:
                    start = time.monotonic()
                    request = ExecutionRequest(code=CODE, placement=placement)  # type: ignore[arg-type]
                    result = client.submit(request, execution_id=execution_id).result(300)
                    latencies[placement].append(time.monotonic() - start)
                    sandboxes[execution_id] = result.sandbox_name
                    ok.append(result.status.value == "succeeded" and result.stdout == "1\n")

                for i in range(2 * args.executions):
                    placement = ("job", "warm")[i % 2]
                    execution_id = f"bench-{placement}-{i}"
                    ids[placement].append(execution_id)
                    thread = threading.Thread(target=one, args=(placement, execution_id))
                    thread.start()
                    threads.append(thread)
                    time.sleep(args.interval)
                for thread in threads:
                    thread.join(600)
                calls = env.calls[first_call:]
                fixed = Counter(f"{c.verb} {c.resource}" for c in env.calls if c.name is None)
            finally:
                worker.stop()
                client.close()
            env.uninstall_warm()
    finally:
        redis_server.stop()
    paths = {}
    for placement in ("job", "warm"):
        values = latencies[placement]
        paths[placement] = {
            "executions": len(values),
            "p50_seconds": round(statistics.median(values), 3),
            "p90_seconds": round(_percentile(values, 0.9), 3),
            **_calls(calls, ids[placement], sandboxes),
        }
    report = {
        "benchmark": "k8s_warm",
        "executions_per_path": args.executions,
        "interval_seconds": args.interval,
        "warm_pool": args.pool,
        "worker_concurrency": 8,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "job": paths["job"],
        "warm": paths["warm"],
        "warm_p50_over_job_p50": round(paths["warm"]["p50_seconds"] / paths["job"]["p50_seconds"], 3),
        "warm_p90_over_job_p90": round(paths["warm"]["p90_seconds"] / paths["job"]["p90_seconds"], 3),
        "worker_fixed_requests": dict(sorted(fixed.items())),
        "all_succeeded": all(ok) and len(ok) == 2 * args.executions,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
