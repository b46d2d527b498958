"""Worker memory per in-flight Kubernetes execution: one ``sandq worker`` holding N at once.

A real worker process (Celery ``threads`` pool, ``--concurrency N``, kubernetes
backend) runs against the stand-in API server; the stand-in's kubelet holds
every pod Running without a sandbox until released, so N executions are in
flight at no cost outside the worker. The worker's VmRSS (from /proc) is read
once idle after a warm-up and again with N in flight. Prints JSON.

Usage: python benchmarks/k8s_inflight.py [--executions 500]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIB = 1024 * 1024


def _status(pid: int) -> dict[str, int]:
    """VmRSS (bytes) and Threads of process ``pid``."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "VmRSS":
            out["rss"] = int(value.split()[0]) * 1024
        elif key == "Threads":
            out["threads"] = int(value)
    return out


def _wait(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.1)


def _submit(cluster: Any, client: Any, n: int, prefix: str) -> list[Any]:
    """Submit ``n`` executions and wait until the kubelet holds all their pods Running."""
    from sandq.contract import ExecutionRequest

    request = ExecutionRequest(code="print(1)", timeout_seconds=600)
    handles = [client.submit(request, execution_id=f"{prefix}-{i}") for i in range(n)]
    _wait(lambda: cluster.held >= n, 600, f"{n} pods held")
    return handles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=500)
    args = parser.parse_args()
    from sandq.client.client import Client
    from tests.conftest import RedisServer, WorkerProcess, make_settings
    from tests.k8s_harness.cluster import HELD_OUTPUT, Cluster
    from tests.k8s_harness.env import NAMESPACE
    from tests.k8s_harness.standin import RunningStandIn

    n = args.executions
    workdir = Path(tempfile.mkdtemp(prefix="sandq-inflight-"))
    redis_server = RedisServer(workdir)
    running = RunningStandIn().start()
    cluster = Cluster(running, workdir / "cluster")
    cluster.hold = True
    settings = make_settings(
        redis_server.url, workdir, backend="kubernetes", namespace=NAMESPACE, concurrency=n,
        kubeconfig_path=str(running.write_kubeconfig(workdir / "kubeconfig")), api_qps=50, api_burst=50,
        metrics_port=0,
    )
    client = Client(settings)
    worker = WorkerProcess(settings, workdir / "worker.log", {"SANDQ_LOG_FORMAT": "text"})
    pid = worker.proc.pid
    try:
        worker.wait_ready(client)
        warm = _submit(cluster, client, 5, "warm")  # imports, connections, the watch
        cluster.release()
        assert all(h.result(120).stdout == HELD_OUTPUT for h in warm)
        time.sleep(2)
        idle = _status(pid)
        handles = _submit(cluster, client, n, "load")
        time.sleep(2)
        busy = max((_status(pid) for _ in range(5)), key=lambda s: s["rss"])
        jobs = sum(1 for c in running.api.calls if c.resource == "jobs" and c.verb == "create")
        cluster.release()
        results = [h.result(600) for h in handles]
    finally:
        worker.stop()
        client.close()
        cluster.close()
        running.stop()
        redis_server.stop()
    watches = sorted(f"{c.verb} {c.resource}" for c in running.api.calls if c.verb == "watch")
    report = {
        "in_flight": n,
        "pool": "threads",
        "concurrency": n,
        "rss_idle_mib": round(idle["rss"] / MIB, 1),
        "rss_in_flight_mib": round(busy["rss"] / MIB, 1),
        "mib_per_in_flight_execution": round((busy["rss"] - idle["rss"]) / MIB / n, 3),
        "threads_idle": idle["threads"],
        "threads_in_flight": busy["threads"],
        "watch_requests": watches,
        "jobs_created": jobs,
        "all_succeeded": all(r.status.value == "succeeded" and r.stdout == HELD_OUTPUT for r in results),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
