"""Local backend benchmark: queue latency and throughput against bare cold ``runsc run``.

Prints one JSON document. Starts its own redis-server and worker (with its warm
pool); run as root. Both sides are measured in the same run, on the same code.
Throughput is measured in ``--rounds`` interleaved rounds (each one sandq run and
one cold run, alternating which goes first); each round's ratio and the median
are reported, since a shared 2-core machine moves a single ratio by several points.
Usage: python benchmarks/local.py [--n 30] [--throughput-n 300] [--concurrency 8] [--rounds 3]
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
from sandq.sandbox.gvisor.bundle import (
    SANDBOX_PYTHON,
    Shape,
    oci_config,
    runner_dir,
    sandbox_env,
    write_bundle,
)
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
    write_bundle(bundle, Shape.of(request), settings, name)
    config = oci_config(Shape.of(request), settings, runner_dir(settings), name, sandbox_env(settings))
    config["process"]["args"] = [SANDBOX_PYTHON, "-c", CODE]
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


def sandq_throughput(client: Client, n: int, concurrency: int) -> tuple[float, bool]:
    """Executions per second of ``n`` runs of CODE through the queue, ``concurrency`` at a time."""

    def one(_: int) -> Status:
        return client.run(ExecutionRequest(code=CODE), timeout=300).status

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(one, range(n)))
    return n / (time.perf_counter() - start), all(s is Status.SUCCEEDED for s in statuses)


def cold_throughput(settings: Settings, workdir: Path, n: int, concurrency: int, first: int) -> float:
    """Executions per second of ``n`` bare cold ``runsc run``, ``concurrency`` at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: cold_runsc(settings, workdir, first + i), range(n)))
    return n / (time.perf_counter() - start)


def start_worker(settings: Settings, client: Client, log: Path) -> WorkerProcess:
    """A ready worker whose warm pool has served one execution."""
    worker = WorkerProcess(settings, log)
    worker.wait_ready(client)
    client.run(ExecutionRequest(code=CODE), timeout=120)  # warm-up
    return worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--throughput-n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds: list[dict[str, object]] = []
    rates: list[float] = []
    cold_rates: list[float] = []
    ratios: list[float] = []
    oks: list[bool] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis_server = RedisServer(base)
        settings = make_settings(redis_server.url, base, concurrency=args.concurrency)
        settings.runsc_root.mkdir(parents=True)
        client = Client(settings)
        worker = start_worker(settings, client, base / "worker-latency.log")
        try:
            latencies, cold = [], []
            for _ in range(args.n):
                time.sleep(0.5)  # an interactive pace: the pool refills between requests
                start = time.perf_counter()
                result = client.run(ExecutionRequest(code=CODE), timeout=120)
                latencies.append(time.perf_counter() - start)
                assert result.status is Status.SUCCEEDED, result
            for i in range(args.n):  # the worker is idle: its pool is full and refills nothing
                cold.append(cold_runsc(settings, base, i))
            worker.stop()
            # Interleaved rounds, each side alone on the machine (the worker runs only for
            # sandq's part); the order alternates so that a drift in the machine's load
            # favours neither side.
            for r in range(args.rounds):
                order = ("sandq", "cold") if r % 2 == 0 else ("cold", "sandq")
                rate, cold_rate, ok = 0.0, 0.0, False
                for side in order:
                    if side == "cold":
                        n, first = args.throughput_n, 100_000 * (r + 1)
                        cold_rate = cold_throughput(settings, base, n, args.concurrency, first)
                        continue
                    worker = start_worker(settings, client, base / f"worker-{r}.log")
                    rate, ok = sandq_throughput(client, args.throughput_n, args.concurrency)
                    worker.stop()
                rates.append(rate)
                cold_rates.append(cold_rate)
                ratios.append(rate / cold_rate)
                oks.append(ok)
                rounds.append(
                    {
                        "first": order[0],
                        "sandq_per_s": round(rate, 2),
                        "cold_runsc_per_s": round(cold_rate, 2),
                        "ratio": round(rate / cold_rate, 3),
                        "all_succeeded": ok,
                    }
                )
                print(json.dumps({"round": r + 1, **rounds[-1]}), file=sys.stderr, flush=True)
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
        "throughput_rounds": rounds,
        "throughput_per_s_median": round(statistics.median(rates), 2),
        "cold_runsc_throughput_per_s_median": round(statistics.median(cold_rates), 2),
        "throughput_over_cold_median": round(statistics.median(ratios), 3),
        "throughput_all_succeeded": all(oks),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
