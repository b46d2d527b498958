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
from sandq.broker.errors import SubmissionRefused
from sandq.broker.keys import Keys
from sandq.broker.routing import Priority
from sandq.client.status import TenantStatus, snapshot
from tests.conftest import RedisServer, make_settings
from tests.integration.queue.conftest import SimWorker

RUN_SECONDS = 0.5
"""Run time in the fairness and priority runs: 20 slots drain a 2,000 flood in 50 s. Shorter
runs (0.1 s: 200 executions/s) saturate the 2 cores with Celery's own work, and the probes would
measure the machine's CPU rather than the queue (a real gVisor execution costs about 0.3 s of
CPU: this machine could not run 200 a second)."""
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
        found.update(client.ready_results([i for i in ids if i not in found]))
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
    """Submit ``count`` interactive requests of ``tenant``, one every ``every`` seconds."""
    ids = []
    for _ in range(count):
        ids.append(client.submit({"code": "pass", "tenant": tenant}).id)
        time.sleep(every)
    return ids


def waits(client: Client, ids: list[str]) -> list[float]:
    results = [client.wait(i, timeout=600) for i in ids]
    return [r.queue_seconds for r in results if r.queue_seconds is not None]


def flood(
    settings: Settings, tenant: str, count: int, priority: Priority, submitters: int = 8
) -> tuple[list[threading.Thread], list[str]]:
    """Submit ``count`` requests of ``tenant`` at once, from ``submitters`` threads.

    Returns once a quarter of them are queued (the threads go on submitting the rest).
    """
    ids = [uuid.uuid4().hex for _ in range(count)]
    request = {"code": "pass", "tenant": tenant}

    def submit_all(share: list[str]) -> None:
        client = Client(settings)
        for execution_id in share:
            while True:
                try:
                    client.submit(request, execution_id=execution_id, priority=priority)
                    break
                except SubmissionRefused as refused:
                    time.sleep(refused.retry_after)
        client.close()

    threads = [
        threading.Thread(target=submit_all, args=(ids[i::submitters],), name=f"flood-{tenant}-{i}")
        for i in range(submitters)
    ]
    for thread in threads:
        thread.start()
    keys, raw = Keys(settings.queue), redis.Redis.from_url(settings.redis_url)
    while any(t.is_alive() for t in threads) and raw.zcard(keys.queued_for(tenant)) < count // 4:
        time.sleep(0.01)
    raw.close()
    return threads, ids


class CpuBusy:
    """The fraction of the machine's CPU time spent busy between ``start`` and ``stop``."""

    @staticmethod
    def _sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    def start(self) -> None:
        self.began = self._sample()

    def stop(self) -> float:
        total, idle = self._sample()
        return round(1 - (idle - self.began[1]) / max(1, total - self.began[0]), 2)


def tenant_row(client: Client, tenant: str) -> TenantStatus:
    """``sandq status``'s row for ``tenant`` (Redis reads only)."""
    return next(row for row in snapshot(client, worker_timeout=None).tenants if row.tenant == tenant)


def backlog(client: Client, tenant: str, ids: list[str]) -> dict[str, int]:
    """How much of a flood is still queued (and parked), and how much has finished, right now."""
    row = tenant_row(client, tenant)
    return {"queued": row.queued, "parked": row.parked, "finished": len(client.ready_results(ids))}


def drain(client: Client, submitting: list[threading.Thread], ids: list[str]) -> int:
    """Wait for a flood to be submitted and finished; return how many results are missing."""
    for thread in submitting:
        thread.join()
    return len(ids) - len(wait_all(client, ids, timeout=600))


def parked_at_cap(settings: Settings, worker_slots: int) -> bool:
    """True if the in-flight cap, not the worker slots, binds: refused executions get parked."""
    return settings.max_in_flight < worker_slots


def fairness(
    settings: Settings, probes: int, count: int, overlap: bool, worker_slots: int
) -> dict[str, object]:
    """B's queue waits alone, then while A's burst is queued ahead of it.

    With ``overlap``, B starts once a quarter of A's burst is queued, while A's submitters (on
    this same machine) still saturate the cores and the workers park A's executions at the cap;
    without it, once the whole burst is queued and, under a cap, parked: A's steady backlog.
    """
    client = Client(settings)
    waits(client, trickle(client, "tenant-b", 1, 0))  # the tenant's queue exists before measuring
    alone = waits(client, trickle(client, "tenant-b", probes, 0.1))
    submitting, a_ids = flood(settings, "tenant-a", count, "interactive")
    if not overlap:
        for thread in submitting:
            thread.join()
        while parked_at_cap(settings, worker_slots) and tenant_row(client, "tenant-a").messages:
            time.sleep(0.05)
    a_when_b_starts = backlog(client, "tenant-a", a_ids)
    cpu = CpuBusy()
    cpu.start()
    b_ids = trickle(client, "tenant-b", probes, 0.1)
    cpu_busy = cpu.stop()
    a_when_b_done = backlog(client, "tenant-a", a_ids)
    contended = waits(client, b_ids)
    a_missing = drain(client, submitting, a_ids)
    client.close()
    alone_p50, contended_p50 = statistics.median(alone), statistics.median(contended)
    return {
        "b_p50_wait_alone_ms": ms(alone_p50),
        "b_p50_wait_during_a_burst_ms": ms(contended_p50),
        "b_p99_wait_during_a_burst_ms": ms(percentile(contended, 0.99)),
        "ratio_p50": round(contended_p50 / alone_p50, 2),
        "cpu_busy_while_b_submits": cpu_busy,
        "a_queued_when_b_started": a_when_b_starts["queued"],
        "a_parked_when_b_started": a_when_b_starts["parked"],
        "a_queued_after_b_last_submitted": a_when_b_done["queued"],
        "a_finished_after_b_last_submitted": a_when_b_done["finished"],
        "a_lost": a_missing,
    }


def priority(settings: Settings, probes: int, count: int, worker_slots: int) -> dict[str, object]:
    """Interactive queue waits alone, then while a batch of ``count`` is queued (same tenant), and
    under a cap parked."""
    client = Client(settings)
    waits(client, trickle(client, "bulk", 1, 0))
    interactive_alone = waits(client, trickle(client, "bulk", probes, 0.05))
    submitting, batch_ids = flood(settings, "bulk", count, "batch")
    for thread in submitting:
        thread.join()
    while parked_at_cap(settings, worker_slots) and tenant_row(client, "bulk").messages:
        time.sleep(0.05)  # under a cap, the batch waits parked
    batch_when_starts = backlog(client, "bulk", batch_ids)
    probe_ids = trickle(client, "bulk", probes, 0.05)
    batch_when_done = backlog(client, "bulk", batch_ids)
    behind_batch = waits(client, probe_ids)
    batch_missing = drain(client, submitting, batch_ids)
    client.close()
    return {
        "batch_queued": count,
        "interactive_probes": probes,
        "interactive_p50_wait_alone_ms": ms(statistics.median(interactive_alone)),
        "interactive_p50_wait_behind_batch_ms": ms(statistics.median(behind_batch)),
        "interactive_p99_wait_behind_batch_ms": ms(percentile(behind_batch, 0.99)),
        "batch_queued_when_interactive_started": batch_when_starts["queued"],
        "batch_queued_after_interactive_last_submitted": batch_when_done["queued"],
        "batch_finished_after_interactive_last_submitted": batch_when_done["finished"],
        "batch_lost": batch_missing,
    }


def fairness_and_priority(
    settings: Settings, probes: int, count: int, worker_slots: int
) -> dict[str, object]:
    """Fairness (A's burst queued, then still being submitted) and priority, on ``settings``."""
    return {
        "max_in_flight": settings.max_in_flight,
        "fairness": {
            "tenant_a_burst": count,
            "tenant_b_probes": probes,
            "tenant_b_interval_ms": 100,
            **fairness(settings, probes, count, False, worker_slots),
            "while_a_still_submits": fairness(settings, probes, count, True, worker_slots),
        },
        "priority": priority(settings, probes, count, worker_slots),
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
    parser.add_argument(
        "--worker-bound",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also measure with no in-flight cap (the worker slots are the bottleneck).",
    )
    args = parser.parse_args()
    began = time.monotonic()
    report: dict[str, object] = {
        "run_seconds": RUN_SECONDS,
        "burst_run_seconds": BURST_RUN_SECONDS,
        "worker_slots": args.workers * args.threads,
    }
    slots = args.workers * args.threads
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir)
        try:
            common = {"backend": "simulated", "simulated_run_seconds": RUN_SECONDS}
            # The burst meets both caps: queued (refusals) and in flight.
            caps = {"max_in_flight": args.cap, "max_queued": args.max_queued, "max_queued_per_tenant": 10**5}
            capped = make_settings(server.url, workdir, queue="bench-burst", **caps, **common)
            with workers(capped, workdir, args.workers, args.threads):
                report["burst"] = burst(capped, args.burst, submitters=8)
            # Fairness and priority: the same in-flight cap, room for every flood in the queue.
            roomy = {"max_in_flight": args.cap, "max_queued": 10**6, "max_queued_per_tenant": 10**6}
            fair = make_settings(server.url, workdir, queue="bench-fair", **roomy, **common)
            with workers(fair, workdir, args.workers, args.threads):
                report["capped"] = fairness_and_priority(fair, args.probes, args.flood, slots)
            if args.worker_bound:
                free = {"max_in_flight": 1000, "max_queued": 10**6, "max_queued_per_tenant": 10**6}
                unbound = make_settings(server.url, workdir, queue="bench-free", **free, **common)
                with workers(unbound, workdir, args.workers, args.threads):
                    report["worker_bound"] = fairness_and_priority(unbound, args.probes, args.flood, slots)
        finally:
            server.stop()
    report["total_seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
