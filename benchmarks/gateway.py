"""The gateway against the Python client direct: ``POST /v1/executions?wait=10`` of ``print(1)``.

Prints one JSON document. Starts its own redis-server, a worker (``--backend gvisor``, the default,
runs the code in real sandboxes; ``simulated`` runs none, so that the figures are the queue's and
the gateway's own) and ``sandq serve``; run as root. Both sides are measured in the same run, in
``--rounds`` interleaved rounds that alternate which goes first:

* latency under open-loop load: ``--n`` requests arriving as a Poisson process at ``--rate`` per
  second, each timed from its scheduled arrival (a slow answer does not delay the next arrivals);
* throughput: ``--throughput-n`` requests, ``--concurrency`` at a time, with the CPU the gateway
  process spent per request.

Usage: python benchmarks/gateway.py [--backend gvisor] [--n 60] [--rate 3] [--throughput-n 120]
       [--concurrency 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import percentile, tree_seconds

from sandq import Client, ExecutionRequest, ResultTimeout, Status
from tests.conftest import REPO, RedisServer, WorkerProcess, free_port, make_settings, settings_env

CODE = "print(1)"
WAIT = 10


def gateway_call(http: httpx.Client) -> Callable[[], bool]:
    def call() -> bool:
        answer = http.post("/v1/executions", params={"wait": WAIT}, json={"code": CODE})
        return answer.status_code == 200 and answer.json()["status"] == "succeeded"

    return call


def direct_call(client: Client) -> Callable[[], bool]:
    def call() -> bool:
        try:
            return client.run(ExecutionRequest(code=CODE), timeout=WAIT).status is Status.SUCCEEDED
        except ResultTimeout:  # as the gateway's 202: no result within the wait
            return False

    return call


def open_loop(call: Callable[[], bool], n: int, rate: float, seed: int) -> tuple[list[float], bool]:
    """Latencies of ``n`` calls arriving as a Poisson process at ``rate``/s, from each scheduled arrival."""
    arrivals = random.Random(seed)
    latencies: list[float] = []
    oks: list[bool] = []
    lock = threading.Lock()

    def timed(at: float) -> None:
        ok = call()
        with lock:
            latencies.append(time.perf_counter() - at)
            oks.append(ok)

    futures: list[Future[None]] = []
    with ThreadPoolExecutor(64) as pool:
        at = time.perf_counter()
        for _ in range(n):
            at += arrivals.expovariate(rate)
            time.sleep(max(at - time.perf_counter(), 0))
            futures.append(pool.submit(timed, at))
    for future in futures:
        future.result()
    return latencies, all(oks)


def closed_loop(call: Callable[[], bool], n: int, concurrency: int, gateway_pid: int) -> dict[str, object]:
    """Requests per second of ``n`` calls, ``concurrency`` at a time, and the gateway's CPU per call."""
    cpu = tree_seconds(gateway_pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        oks = list(pool.map(lambda _: call(), range(n)))
    elapsed = time.perf_counter() - start
    return {"per_s": round(n / elapsed, 2), "gateway_cpu_ms_per_request": round(
        (tree_seconds(gateway_pid) - cpu) / n * 1000, 2), "all_succeeded": all(oks)}


def start_gateway(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    gateway = subprocess.Popen(
        [sys.executable, "-m", "sandq", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and gateway.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return gateway
        except httpx.HTTPError:
            time.sleep(0.2)
    gateway.kill()
    raise RuntimeError(f"the gateway did not start: {log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("gvisor", "simulated"), default="gvisor")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--throughput-n", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    load = round(os.getloadavg()[0], 1)
    latency: dict[str, list[float]] = {"gateway": [], "direct": []}
    throughput: dict[str, list[dict[str, object]]] = {"gateway": [], "direct": []}
    oks: list[bool] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as started:
        base = Path(tmp)
        redis_server = RedisServer(base)
        started.callback(redis_server.stop)
        extra = {"simulated_run_seconds": 0.0} if args.backend == "simulated" else {}
        settings = make_settings(redis_server.url, base, backend=args.backend, concurrency=4, **extra)
        env = settings_env(settings)
        env.update({"SANDQ_GATEWAY_SECRET": "b" * 64, "SANDQ_GATEWAY_RATE_LIMIT": "100000/second"})
        client = Client(settings)
        started.callback(client.close)
        pool_args = ("--pool", "threads") if args.backend == "simulated" else ()
        worker = WorkerProcess(settings, base / "worker.log", args=("-m", "sandq", "worker", *pool_args))
        started.callback(worker.stop)
        port = free_port()
        gateway = start_gateway(env, port, base / "gateway.log")
        started.callback(gateway.wait, 60)
        started.callback(gateway.terminate)
        made = [sys.executable, "-m", "sandq", "keys", "create", "--tenant", "bench"]
        key = subprocess.run(made, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        http = started.enter_context(httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {key}"}, timeout=60,
            limits=limits,
        ))
        worker.wait_ready(client)
        calls = {"gateway": gateway_call(http), "direct": direct_call(client)}
        for call in calls.values():  # warm-up: connections, the worker's pool processes
            closed_loop(call, args.concurrency, args.concurrency, gateway.pid)
        for r in range(args.rounds):
            order = ("gateway", "direct") if r % 2 == 0 else ("direct", "gateway")
            for side in order:
                times, ok = open_loop(calls[side], args.n, args.rate, seed=r)
                latency[side] += times
                oks.append(ok)
            for side in order:
                rate = closed_loop(calls[side], args.throughput_n, args.concurrency, gateway.pid)
                throughput[side].append(rate)
            print(json.dumps({"round": r + 1, "throughput": {s: t[-1] for s, t in throughput.items()}}),
                  file=sys.stderr, flush=True)
    ended = all(t["all_succeeded"] for runs in throughput.values() for t in runs)
    rates = {side: statistics.median(float(str(t["per_s"])) for t in ts) for side, ts in throughput.items()}
    p50 = {side: statistics.median(v) for side, v in latency.items()}
    p99 = {side: percentile(v, 0.99) for side, v in latency.items()}
    report = {
        "benchmark": "gateway",
        "backend": args.backend,
        "load_average_at_start": load,
        "code": CODE,
        "request": f"POST /v1/executions?wait={WAIT} (direct: Client.run(timeout={WAIT}))",
        "open_loop": {"rate_per_s": args.rate, "n_per_round": args.n, "rounds": args.rounds},
        "latency": {
            side: {"p50_s": round(statistics.median(v), 4), "p99_s": round(percentile(v, 0.99), 4)}
            for side, v in latency.items()
        },
        "throughput": {
            "concurrency": args.concurrency, "n_per_round": args.throughput_n, "rounds": throughput,
            "median_per_s": rates,
        },
        "gateway_over_direct": {
            "latency_p50": round(p50["gateway"] / p50["direct"], 3),
            "latency_p99": round(p99["gateway"] / p99["direct"], 3),
            "throughput": round(rates["gateway"] / rates["direct"], 3),
        },
        "all_ended_within_the_wait": all(oks) and ended,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
