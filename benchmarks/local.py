"""Local backend benchmark: queue latency and throughput against bare cold ``runsc run``.

Prints one JSON document. Starts its own redis-server and worker (with its warm
pool); run as root. Both sides are measured in the same run, on the same code.
Usage: python benchmarks/local.py [--n 30] [--throughput-n 300] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.worker.oci_bundle import oci_config, write_bundle
from tests.conftest import RedisServer, WorkerProcess, make_settings

CODE = "print(1)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cold_runsc(settings: Settings, workdir: Path, index: int) -> float:
    """One bare ``runsc run`` of python -c CODE with the same bundle shape, attached."""
    name = f"bench-cold-{index}"
    bundle = workdir / name
    request = ExecutionRequest(code=CODE)
    write_bundle(bundle, request, settings, name)
    config = oci_config(request, settings, bundle / "files", name)
    config["process"]["args"] = [settings.sandbox_python, "-c", CODE]
    (bundle / "config.json").write_text(json.dumps(config))
    root = ["runsc", "--root", str(settings.runsc_root)]
    start = time.perf_counter()
    subprocess.run(
        [*root, "--network=none", "run", "--bundle", str(bundle), name], capture_output=True, check=True
    )
    elapsed = time.perf_counter() - start
    subprocess.run([*root, "delete", "--force", name], capture_output=True, check=False)
    shutil.rmtree(bundle)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--throughput-n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis_server = RedisServer(base)
        settings = make_settings(redis_server.url, base, concurrency=args.concurrency)
        settings.runsc_root.mkdir(parents=True)
        client = Client(settings)
        worker = WorkerProcess(settings, base / "worker.log")
        try:
            worker.wait_ready(client)
            client.run(ExecutionRequest(code=CODE), timeout=120)  # warm-up
            latencies, cold = [], []
            for _ in range(args.n):
                time.sleep(0.5)  # an interactive pace: the pool refills between requests
                start = time.perf_counter()
                result = client.run(ExecutionRequest(code=CODE), timeout=120)
                latencies.append(time.perf_counter() - start)
                assert result.status is Status.SUCCEEDED, result
            for i in range(args.n):  # the worker is idle: its pool is full and refills nothing
                cold.append(cold_runsc(settings, base, i))

            def one(_: int) -> Status:
                return client.run(ExecutionRequest(code=CODE), timeout=300).status

            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                statuses = list(pool.map(one, range(args.throughput_n)))
            elapsed = time.perf_counter() - start
            worker.stop()  # the raw side runs alone, as sandq did

            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(lambda i: cold_runsc(settings, base, 100_000 + i), range(args.throughput_n)))
            cold_elapsed = time.perf_counter() - start
        finally:
            worker.stop()
            client.close()
            redis_server.stop()
    report = {
        "benchmark": "local",
        "code": CODE,
        "n": args.n,
        "queue_p50_s": round(statistics.median(latencies), 4),
        "queue_p99_s": round(percentile(latencies, 0.99), 4),
        "cold_runsc_p50_s": round(statistics.median(cold), 4),
        "queue_p50_over_cold_p50": round(statistics.median(latencies) / statistics.median(cold), 3),
        "throughput_concurrency": args.concurrency,
        "throughput_n": args.throughput_n,
        "throughput_per_s": round(args.throughput_n / elapsed, 2),
        "cold_runsc_throughput_per_s": round(args.throughput_n / cold_elapsed, 2),
        "throughput_over_cold": round(cold_elapsed / elapsed, 3),
        "throughput_all_succeeded": all(s is Status.SUCCEEDED for s in statuses),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
