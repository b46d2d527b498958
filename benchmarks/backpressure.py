"""Backpressure benchmark on the simulated backend: caps, fairness and priorities. Prints JSON.

Starts its own redis-server and simulated-backend workers (``SANDQ_BACKEND=simulated``: the
backend sleeps for the run time instead of running code; it exists for queue benchmarks only).
Usage: python benchmarks/backpressure.py [--burst 10000] [--workers 3] [--threads 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from sandq import Client, Settings
from sandq.broker.batch import Batch, ready_results
from sandq.broker.errors import SubmissionRefused
from sandq.broker.keys import Keys
from sandq.broker.routing import Priority
from tests.conftest import RedisServer, make_settings
from tests.queue.conftest import SimWorker

RUN_SECONDS = 0.02
BURST_RUN_SECONDS = 0.25
"""Longer runs in the burst, so that 2 cores of Celery overhead can keep 20 sandboxes busy."""
BURST_REQUEST = {"code": "pass", "tenant": "burst", "labels": {"simulated_seconds": str(BURST_RUN_SECONDS)}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


@contextmanager
def workers(settings: Settings, workdir: Path, count: int, threads: int) -> Iterator[None]:
    procs = [SimWorker(settings, workdir / f"worker-{settings.queue}-{i}.log", threads) for i in range(count)]
    try:
        for proc in procs:
            proc.wait_ready()
        yield
    finally:
        for proc in procs:
            proc.stop()


def wait_all(client: Client, ids: list[str], timeout: float) -> dict[str, object]:
    found: dict[str, object] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(ids) and time.monotonic() < deadline:
        found.update(ready_results(client, [i for i in ids if i not in found]))
        time.sleep(0.2)
    return found


def max_overlap(runs: list[dict[str, float]]) -> int:
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def burst(settings: Settings, n: int, submitters: int) -> dict[str, object]:
    """``n`` submissions at once from several threads, against the queued and in-flight caps."""
    admitted: list[str] = []
    refused: list[float] = []
    lock = threading.Lock()

    def submit(count: int) -> None:
        client = Client(settings)
        for _ in range(count):
            start = time.perf_counter()
            try:
                handle = client.submit(BURST_REQUEST, priority="batch")
            except SubmissionRefused:
                with lock:
                    refused.append(time.perf_counter() - start)
            else:
                with lock:
                    admitted.append(handle.id)
        client.close()

    begin = time.monotonic()
    threads = [threading.Thread(target=submit, args=(n // submitters,)) for _ in range(submitters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submit_seconds = time.monotonic() - begin
    client = Client(settings)
    results = wait_all(client, admitted, timeout=600)
    drain_seconds = time.monotonic() - begin
    raw = redis.Redis.from_url(settings.redis_url)
    runs = [json.loads(r) for r in raw.lrange(Keys(settings.queue).simulated_runs, 0, -1)]
    raw.delete(Keys(settings.queue).simulated_runs)
    starts = Counter(r["id"] for r in runs)
    client.close()
    return {
        "submitted": n,
        "submitters": submitters,
        "max_queued": settings.max_queued,
        "max_in_flight": settings.max_in_flight,
        "admitted": len(admitted),
        "rejected": len(refused),
        "rejection_latency_p50_ms": ms(percentile(refused, 0.5)) if refused else None,
        "rejection_latency_p99_ms": ms(percentile(refused, 0.99)) if refused else None,
        "max_in_flight_observed": max_overlap(runs),
        "lost": len(set(admitted) - set(results)),
        "duplicated": sum(1 for c in starts.values() if c > 1),
        "submit_seconds": round(submit_seconds, 2),
        "drain_seconds": round(drain_seconds, 2),
    }


def trickle(client: Client, tenant: str, count: int, every: float) -> list[str]:
    ids = []
    for _ in range(count):
        ids.append(client.submit({"code": "pass", "tenant": tenant}).id)
        time.sleep(every)
    return ids


def waits(client: Client, ids: list[str]) -> list[float]:
    results = [client.wait(i, timeout=600) for i in ids]
    return [r.queue_seconds for r in results if r.queue_seconds is not None]


def in_background(settings: Settings, tenant: str, count: int, priority: Priority) -> Batch:
    """Submit ``count`` requests from another thread; return once a tenth of them are queued."""
    client = Client(settings)
    ids = [uuid.uuid4().hex for _ in range(count)]
    submitting = threading.Thread(
        target=client.submit_batch, args=([{"code": "pass", "tenant": tenant}] * count,),
        kwargs={"ids": ids, "priority": priority},
    )
    submitting.start()
    keys, raw = Keys(settings.queue), redis.Redis.from_url(settings.redis_url)
    while submitting.is_alive() and raw.zcard(keys.queued_for(tenant)) < count // 10:
        time.sleep(0.01)
    return _attach(client, ids)  # the thread goes on submitting the rest


def _attach(client: Client, ids: list[str]) -> Batch:
    batch = Batch(client, [], ids=[])
    batch.ids, batch._submitted = ids, list(ids)  # already submitted by the thread
    return batch


def fairness_and_priority(settings: Settings, probes: int, flood: int) -> dict[str, object]:
    """B alone, then B while A floods; interactive alone, then while a batch is queued."""
    client = Client(settings)
    waits(client, trickle(client, "tenant-b", 1, 0))  # the tenant's queue exists before measuring
    alone = waits(client, trickle(client, "tenant-b", probes, 0.1))
    flood_batch = in_background(settings, "tenant-a", flood, "interactive")
    contended = waits(client, trickle(client, "tenant-b", probes, 0.1))
    a_progress = flood_batch.progress()
    flood_batch.results(timeout=600)
    waits(client, trickle(client, "bulk", 1, 0))
    batch = in_background(settings, "bulk", flood, "batch")
    behind_batch = waits(client, trickle(client, "bulk", probes, 0.05))
    batch_progress = batch.progress()
    batch.results(timeout=600)
    client.close()
    alone_p50, contended_p50 = statistics.median(alone), statistics.median(contended)
    return {
        "max_in_flight": settings.max_in_flight,
        "fairness": {
            "tenant_a_burst": flood,
            "tenant_b_probes": probes,
            "b_p50_wait_alone_ms": ms(alone_p50),
            "b_p50_wait_during_a_burst_ms": ms(contended_p50),
            "b_p99_wait_during_a_burst_ms": ms(percentile(contended, 0.99)),
            "ratio": round(contended_p50 / alone_p50, 2),
            "a_done_when_b_finished": a_progress.done,
        },
        "priority": {
            "batch_queued": flood,
            "interactive_p50_wait_ms": ms(statistics.median(behind_batch)),
            "interactive_p99_wait_ms": ms(percentile(behind_batch, 0.99)),
            "batch_done_when_interactive_finished": batch_progress.done,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--max-queued", type=int, default=1500)
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=30)
    args = parser.parse_args()
    report: dict[str, object] = {
        "run_seconds": RUN_SECONDS,
        "burst_run_seconds": BURST_RUN_SECONDS,
        "worker_slots": args.workers * args.threads,
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir)
        try:
            common = {"backend": "simulated", "simulated_run_seconds": RUN_SECONDS}
            caps = {"max_in_flight": args.cap, "max_queued": args.max_queued, "max_queued_per_tenant": 10**5}
            capped = make_settings(server.url, workdir, queue="bench-capped", **caps, **common)
            with workers(capped, workdir, args.workers, args.threads):
                report["burst"] = burst(capped, args.burst, submitters=8)
                report["capped"] = fairness_and_priority(capped, args.probes, args.flood)
            free = make_settings(server.url, workdir, queue="bench-free", max_in_flight=1000, **common)
            with workers(free, workdir, args.workers, args.threads):
                report["worker_bound"] = fairness_and_priority(free, args.probes, args.flood)
        finally:
            server.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
