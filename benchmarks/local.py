"""Local backend benchmark: sandq's latency under open-loop load, throughput and CPU at saturation,
interactive work behind a batch, and warm-pool memory, against bare cold ``runsc run``. Prints JSON.

Run as root. Starts its own redis-server and workers (``sandq worker``, ``--pool``); everything
is measured in one run, on the same machine, against a bare cold ``runsc run`` of the same
bundle running ``python -c print(1)``:

- ``cold``: the cold run's latency, one at a time, of two bundles: ``cold`` with the request's
  limits (its CPU quota throttles the boot too), and ``cold_no_quota`` without a CPU quota (a
  bare run as fast as runsc boots; sandq boots without the quota and sets it before the job).
  Each latency percentile is reported over each cold p50 (``p99_over_cold``) and over the cold
  run's same percentile (``p99_over_cold_p99``: what a user starting cold sandboxes would meet
  there); the faster, ``cold_no_quota``, is the stricter baseline.
- ``throughput``: ``--rounds`` interleaved rounds, each ``--throughput-n`` executions through
  sandq and as many cold runs of each bundle, ``--concurrency`` at a time (closed loop, each
  side alone on the machine); executions per second and CPU per execution (the worker with
  every sandbox it reaped, the client and Redis, also each apart; the cold side's processes), and
  the whole machine's busy CPU per execution (``machine``: the kernel's threads and the processes
  PID 1 reaps too; both sides keep the CPU busy at saturation, so this is what sets the rate). A
  cold run that ended has deleted its container itself: it pays no ``runsc delete``.
- ``latency``: one client back to back, one client at an interactive pace (0.5 s apart), then
  open-loop Poisson arrivals at 25%, 50% and 70% of sandq's saturation throughput measured
  above (a fresh worker per level; latency counts from each request's scheduled time).
- ``batch``: tenant "b" sends print(1) at interactive priority every 0.5 s, alone, then behind
  tenant "a"'s ``--batch-n`` batch-priority ``time.sleep(0.2)``, with the interactive reserve
  and without it (``interactive_reserve=0``, ``warm_pool_reserve=0``).
- ``memory``: idle warm sandboxes at each pool size (PSS of their processes, and their cgroups).

Usage: python benchmarks/local.py [--quick] [--phases cold,throughput,latency,batch,memory]
       [--pool threads|prefork] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.sandbox.gvisor.booting import BootSlots
from sandq.sandbox.gvisor.bundle import (
    SANDBOX_PYTHON,
    Shape,
    oci_config,
    runner_dir,
    sandbox_env,
    without_quota,
    write_bundle,
)
from sandq.sandbox.gvisor.pool import WarmPool
from sandq.sandbox.gvisor.sandbox import has_state
from tests.conftest import RedisServer, WorkerProcess, free_port, make_settings

CODE = "print(1)"
SLEEP = "import time\ntime.sleep(0.2)"
LOADS = (0.25, 0.5, 0.7)
TICK = os.sysconf("SC_CLK_TCK")
PACE_SECONDS = 0.5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


COLD_BUNDLES = {"cold": True, "cold_no_quota": False}
"""The cold baselines: each one's name, and whether its bundle has the request's CPU quota."""


PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def spread(latencies: list[float], colds: dict[str, list[float]]) -> dict[str, float]:
    """p50, p90 and p99 in ms, each over each cold run's p50 and over its same percentile
    (``colds``: name -> the cold runs' seconds)."""
    out: dict[str, float] = {"n": len(latencies)}
    for name, q in PERCENTILES:
        value = percentile(latencies, q)
        out[f"{name}_ms"] = ms(value)
        for cold, runs in colds.items():
            out[f"{name}_over_{cold}"] = round(value / percentile(runs, 0.5), 3)
            if name != "p50":
                out[f"{name}_over_{cold}_{name}"] = round(value / percentile(runs, q), 3)
    return out


def proc_cpu(pid: int, children: bool) -> float:
    """CPU seconds of ``pid`` (and of the children it has reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / TICK


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy since boot (``/proc/stat``: all but idle and iowait).

    It counts what the per-process figures miss: the kernel's threads (a sandbox's namespaces and
    cgroups are torn down there) and the processes of a sandbox that outlive their ``runsc run``,
    which PID 1 reaps (about 25-35 ms of CPU per execution at saturation, either side).
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def own_cpu() -> tuple[float, float]:
    """CPU seconds of this process, and of the children it has reaped."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


@dataclass
class Bench:
    """What every phase shares: the scratch directory, Redis, the worker options."""

    base: Path
    redis: RedisServer
    pool: str
    concurrency: int

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {"concurrency": self.concurrency, "runsc_root": self.base / "runsc",
                                     "bundle_dir": self.base / "bundles"}
        values.update(overrides)
        return make_settings(self.redis.url, self.base, **values)

    @contextmanager
    def worker(self, name: str, **overrides: object) -> Iterator[Running]:
        """A ready worker, warmed up by one execution; stopped (its pool drained) and reaped on exit."""
        settings = self.settings(metrics_port=free_port(), **overrides)
        client = Client(settings)
        args = ("-m", "sandq", "worker", "--loglevel", "WARNING", "--pool", self.pool)
        worker = WorkerProcess(settings, self.base / f"worker-{name}.log", args=args)
        running = Running(client, worker.proc.pid, settings.metrics_port or 0)
        try:
            worker.wait_ready(client)
            client.run(ExecutionRequest(code=CODE), timeout=120)  # warm-up
            yield running
        finally:
            running.final = stop_and_reap(worker)
            client.close()


@dataclass
class Running:
    """A worker and its client."""

    client: Client
    pid: int
    metrics_port: int
    final: float | None = None
    """The worker's whole CPU once reaped."""

    def starts(self) -> dict[str, int]:
        """How the worker's executions got their sandboxes so far (``sandq_sandbox_starts_total``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        counts = dict.fromkeys(("ready", "booting", "cold"), 0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "sandq_sandbox_starts_total":
                    counts[sample.labels["start"]] = int(sample.value)
        return counts

    def starts_since(self, before: dict[str, int]) -> dict[str, int]:
        """Sandbox starts since ``before`` (from ``starts``), by kind."""
        return {kind: count - before[kind] for kind, count in self.starts().items()}

    def cpu(self) -> float:
        """CPU seconds of the worker and of every sandbox it has reaped (all of them, once it is reaped).

        With the prefork pool, its pool processes reap the sandboxes: their figures are added.
        """
        if self.final is not None:
            return self.final
        pool = [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        pool = [p for p in pool if "python" in Path(f"/proc/{p}/comm").read_text()]
        return proc_cpu(self.pid, children=True) + sum(proc_cpu(p, children=True) for p in pool)


def stop_and_reap(worker: WorkerProcess) -> float:
    """SIGTERM (a warm shutdown: executions end, the pool drains), then the worker's whole CPU."""
    if worker.proc.poll() is not None:
        return 0.0
    worker.proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(worker.proc.pid, 0)  # the worker's own CPU and its reaped descendants'
    worker.proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def cold_runsc(bench: Bench, index: int, quota: bool = True) -> float:
    """One bare ``runsc run`` of ``python -c CODE`` with the same bundle, attached; its wall time.
    ``quota``: the bundle has the request's CPU quota from the start."""
    settings = bench.settings()
    name = f"bench-cold-{index}"
    bundle = bench.base / name
    shape = Shape.of(ExecutionRequest(code=CODE))
    write_bundle(bundle, shape, settings, name)
    config = oci_config(shape, settings, runner_dir(settings), name, sandbox_env(settings))
    config["process"]["args"] = [SANDBOX_PYTHON, "-c", CODE]
    if not quota:
        config = without_quota(config)
    (bundle / "config.json").write_text(json.dumps(config))
    root = ["runsc", "--root", str(settings.runsc_root)]
    start = time.perf_counter()
    command = [*root, "--network=none", "run", "--bundle", str(bundle), name]
    subprocess.run(command, capture_output=True, check=True)
    elapsed = time.perf_counter() - start
    if has_state(settings, name):  # an attached run that ended has deleted its container itself
        subprocess.run([*root, "delete", "--force", name], capture_output=True, check=False)
    shutil.rmtree(bundle)
    return elapsed


class Window:
    """The middle of a closed-loop run (from 20% to 80% of completions): steady-state rate and CPU.

    ``cpu`` returns CPU seconds so far by part; the first part is the total.
    """

    LOW, HIGH = 0.2, 0.8

    def __init__(self, n: int, cpu: Callable[[], dict[str, float]]) -> None:
        self.marks = {max(1, round(n * self.LOW)): "low", round(n * self.HIGH): "high"}
        self.cpu = cpu
        self.seen: dict[str, tuple[float, dict[str, float]]] = {}
        self.done = 0
        self._lock = threading.Lock()

    def completed(self) -> None:
        with self._lock:
            self.done += 1
            mark = self.marks.get(self.done)
            if mark:
                self.seen[mark] = (time.perf_counter(), self.cpu())

    def figures(self) -> dict[str, float]:
        (t0, c0), (t1, c1) = self.seen["low"], self.seen["high"]
        count = round(self.done * (self.HIGH - self.LOW))
        cpu = {f"steady_{part}_cpu_ms_per_execution": ms((c1[part] - c0[part]) / count) for part in c0}
        return {"steady_per_s": round(count / (t1 - t0), 2), **cpu}


def closed_loop(run_one: Callable[[int], object], n: int, concurrency: int, window: Window) -> float:
    """Seconds to run ``n`` calls, ``concurrency`` at a time."""

    def counted(i: int) -> None:
        run_one(i)
        window.completed()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(counted, range(n)))
    return time.perf_counter() - start


SPLITS: dict[str, list[tuple[float, float]]] = {}
"""(queue, run) seconds of executions, by the name of what they were part of."""


def run_ok(client: Client, tenant: str = "default", split: str | None = None) -> None:
    """print(1), interactive, to success; its queue and run seconds are kept under ``split``."""
    result = client.submit(ExecutionRequest(code=CODE, tenant=tenant)).result(timeout=600)
    assert result.status is Status.SUCCEEDED, result
    if split is not None and result.queue_seconds is not None and result.run_seconds is not None:
        SPLITS.setdefault(split, []).append((result.queue_seconds, result.run_seconds))


def split_of(name: str) -> dict[str, float]:
    """Median seconds from submission to the sandbox's start (the queue), and in the backend (the run)."""
    rows = SPLITS.get(name) or [(0.0, 0.0)]
    return {"queue_p50_ms": ms(statistics.median(q for q, _ in rows)),
            "run_p50_ms": ms(statistics.median(r for _, r in rows))}


def sandq_saturation(bench: Bench, n: int, round_no: int) -> dict[str, float]:
    """Executions per second and CPU per execution at saturation, through the queue.

    Steady: the CPU of the worker with the sandboxes it reaped, of the client and of Redis, over
    the middle of the run (the worker's own apart). Whole run: all of it, until the worker has
    stopped and drained its pool (the sandboxes booted for demand that then stopped count too).
    """
    redis_pid = bench.redis.proc.pid  # type: ignore[union-attr]

    def others() -> float:
        return own_cpu()[0] + proc_cpu(redis_pid, children=False)

    with bench.worker(f"throughput-{round_no}") as worker:

        def parts() -> dict[str, float]:
            client, redis = own_cpu()[0], proc_cpu(redis_pid, children=False)
            worker_all, worker_own = worker.cpu(), proc_cpu(worker.pid, children=False)
            return {"all": worker_all + client + redis, "worker_process": worker_own,
                    "sandboxes": worker_all - worker_own, "client": client, "redis": redis,
                    "machine": machine_cpu()}

        before = parts()["all"]
        window = Window(n, parts)
        started = worker.starts()
        seconds = closed_loop(lambda _: run_ok(worker.client), n, bench.concurrency, window)
        outside = others()
        starts = worker.starts_since(started)
    whole = worker.cpu() + outside - before
    whole_ms = ms(whole / n)
    return {"per_s": round(n / seconds, 2), **window.figures(), "whole_run_cpu_ms_per_execution": whole_ms,
            **{f"{kind}_starts": count for kind, count in starts.items()}}


def cold_saturation(bench: Bench, n: int, round_no: int, quota: bool = True) -> dict[str, float]:
    """Bare cold runs per second and their CPU per execution, ``concurrency`` at a time."""
    before = sum(own_cpu())
    window = Window(n, lambda: {"all": sum(own_cpu()), "machine": machine_cpu()})
    first = 1000 * (round_no + 1) + (0 if quota else 100_000)
    seconds = closed_loop(lambda i: cold_runsc(bench, first + i, quota), n, bench.concurrency, window)
    return {"per_s": round(n / seconds, 2), **window.figures(),
            "whole_run_cpu_ms_per_execution": ms((sum(own_cpu()) - before) / n)}


def throughput(bench: Bench, n: int, rounds: int) -> dict[str, object]:
    """Interleaved rounds of sandq and each cold bundle at saturation (the order rotates)."""
    names = ["sandq", *COLD_BUNDLES]
    sides: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    rows = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for side in order:
            if side == "sandq":
                sides[side].append(sandq_saturation(bench, n, r))
            else:
                sides[side].append(cold_saturation(bench, n, r, COLD_BUNDLES[side]))
        row: dict[str, object] = {"first": order[0], **{name: sides[name][-1] for name in names}}
        for cold in COLD_BUNDLES:
            row[f"ratio_over_{cold}"] = round(sides["sandq"][-1]["per_s"] / sides[cold][-1]["per_s"], 3)
        rows.append(row)
        print(json.dumps({"throughput_round": r + 1, **row}), file=sys.stderr, flush=True)

    def median(side: str, key: str) -> float:
        return round(statistics.median(row[key] for row in sides[side]), 2)

    out: dict[str, object] = {
        "concurrency": bench.concurrency, "n": n, "rounds": rows,
        "sandq_per_s": median("sandq", "per_s"),
        "sandq_cpu_ms_per_execution": median("sandq", "steady_all_cpu_ms_per_execution"),
        "sandq_machine_cpu_ms_per_execution": median("sandq", "steady_machine_cpu_ms_per_execution"),
        "sandq_worker_process_cpu_ms": median("sandq", "steady_worker_process_cpu_ms_per_execution"),
        "sandq_whole_run_cpu_ms_per_execution": median("sandq", "whole_run_cpu_ms_per_execution"),
    }
    for cold in COLD_BUNDLES:
        ratios = [sides["sandq"][i]["per_s"] / sides[cold][i]["per_s"] for i in range(rounds)]
        steady = [sides["sandq"][i]["steady_per_s"] / sides[cold][i]["steady_per_s"] for i in range(rounds)]
        out[f"{cold}_per_s"] = median(cold, "per_s")
        out[f"{cold}_cpu_ms_per_execution"] = median(cold, "steady_all_cpu_ms_per_execution")
        out[f"{cold}_machine_cpu_ms_per_execution"] = median(cold, "steady_machine_cpu_ms_per_execution")
        out[f"ratio_over_{cold}_median"] = round(statistics.median(ratios), 3)
        out[f"steady_ratio_over_{cold}_median"] = round(statistics.median(steady), 3)
    return out


def open_loop(client: Client, rate: float, n: int, seed: int, warmup: int, split: str) -> list[float]:
    """Latencies of ``n`` print(1) arriving as a Poisson process of ``rate``/s, each from its scheduled
    time (the first ``warmup`` arrivals run but are not counted)."""
    rng = random.Random(seed)
    at = time.perf_counter() + 0.2
    schedule = []
    for _ in range(warmup + n):
        at += rng.expovariate(rate)
        schedule.append(at)
    latencies: list[float] = [0.0] * len(schedule)

    def one(i: int) -> None:
        run_ok(client, split=split if i >= warmup else None)
        latencies[i] = time.perf_counter() - schedule[i]

    with ThreadPoolExecutor(256) as pool:
        for i, when in enumerate(schedule):
            time.sleep(max(0.0, when - time.perf_counter()))
            pool.submit(one, i)
    assert all(latencies), "an execution did not finish"
    return latencies[warmup:]


def paced(client: Client, n: int, pause: float) -> list[float]:
    """Latencies of ``n`` print(1), one at a time, ``pause`` seconds apart."""
    out = []
    for _ in range(n):
        time.sleep(pause)
        start = time.perf_counter()
        run_ok(client)
        out.append(time.perf_counter() - start)
    return out


def latency(
    bench: Bench, n: int, poisson_n: int, saturation: float, cold: dict[str, list[float]]
) -> dict[str, object]:
    out: dict[str, object] = {}
    with bench.worker("latency") as worker:
        client = worker.client
        started = worker.starts()
        back_to_back = paced(client, n, 0.0)
        bound = round(statistics.median(back_to_back) * saturation, 3)  # p50 over 1/throughput
        out["back_to_back"] = {**spread(back_to_back, cold), "p50_over_one_per_throughput": bound,
                               "sandbox_starts": worker.starts_since(started)}
        time.sleep(5)
        started = worker.starts()
        pace = spread(paced(client, n, PACE_SECONDS), cold)
        out["interactive_pace"] = {**pace, "sandbox_starts": worker.starts_since(started)}
    for load in LOADS:
        rate = load * saturation
        with bench.worker(f"poisson-{load}") as worker:
            warmup = max(10, poisson_n // 10)
            name = f"poisson_{round(load * 100)}pct"
            started = worker.starts()
            sample = open_loop(worker.client, rate, poisson_n, int(load * 100), warmup, name)
            starts = worker.starts_since(started)  # the warm-up's among them
        row = {"rate_per_s": round(rate, 2), **spread(sample, cold), **split_of(name),
               "sandbox_starts": starts}
        out[name] = row
        print(json.dumps({"poisson": load, **row}), file=sys.stderr, flush=True)
    return out


def behind_batch(client: Client, batch_n: int, split: str) -> tuple[float, list[float]]:
    """Tenant a's batch of ``batch_n`` sleeps, tenant b's print(1) every 0.5 s meanwhile: the batch's
    total seconds and b's latencies while it ran."""
    b: list[float] = []
    done = threading.Event()

    def one(scheduled: float) -> None:
        b.append(timed_run(client, scheduled, split))

    def interactive() -> None:
        with ThreadPoolExecutor(64) as pool:
            next_at = time.perf_counter()
            while not done.is_set():
                pool.submit(one, next_at)
                next_at += PACE_SECONDS
                time.sleep(max(0.0, next_at - time.perf_counter()))

    sender = threading.Thread(target=interactive)
    start = time.time()
    sender.start()
    request = ExecutionRequest(code=SLEEP, tenant="a")
    handles = [client.submit(request, priority="batch") for _ in range(batch_n)]
    results = [h.result(timeout=1200) for h in handles]
    done.set()
    sender.join()
    assert all(r.status is Status.SUCCEEDED for r in results)
    last = max(r.finished_at.timestamp() for r in results if r.finished_at is not None)
    return last - start, b


def timed_run(client: Client, scheduled: float, split: str) -> float:
    time.sleep(max(0.0, scheduled - time.perf_counter()))
    run_ok(client, tenant="b", split=split)
    return time.perf_counter() - scheduled


def batch(bench: Bench, batch_n: int, alone_n: int) -> dict[str, object]:
    out: dict[str, object] = {"batch_n": batch_n, "pace_s": PACE_SECONDS}
    with bench.worker("interactive-alone") as worker:
        client = worker.client
        alone = [timed_run(client, time.perf_counter() + PACE_SECONDS, "alone") for _ in range(alone_n)]
    alone_p50 = statistics.median(alone)
    out["interactive_alone"] = {"p50_ms": ms(alone_p50), **split_of("alone")}
    no_reserve = {"interactive_reserve": 0, "warm_pool_reserve": 0}
    for name, overrides in (("with_reserve", {}), ("without_reserve", no_reserve)):
        with bench.worker(f"batch-{name}", **overrides) as worker:
            total, b = behind_batch(worker.client, batch_n, name)
        out[name] = {"batch_total_s": round(total, 2), "interactive_n": len(b),
                     "interactive_p50_ms": ms(statistics.median(b)),
                     "interactive_p90_ms": ms(percentile(b, 0.9)),
                     "interactive_p50_over_alone": round(statistics.median(b) / alone_p50, 2),
                     **{f"interactive_{k}": v for k, v in split_of(name).items()}}
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    out["batch_time_with_over_without_reserve"] = round(
        out["with_reserve"]["batch_total_s"] / out["without_reserve"]["batch_total_s"], 3)  # type: ignore[index]
    return out


def memory(bench: Bench, sizes: list[int]) -> list[dict[str, float]]:
    """Idle warm sandboxes at each pool size: the PSS of their processes and their cgroups' usage."""
    rows = []
    shape = Shape.of(ExecutionRequest(code=CODE))
    for size in sizes:
        settings = bench.settings(warm_pool_min=size, warm_pool_max=size, warm_pool_reserve=0)
        pool = WarmPool(settings, shape, BootSlots(size))
        try:
            deadline = time.monotonic() + 300
            while pool.ready_count() < size and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)
            sandboxes = [r.sandbox for r in list(pool._ready)]
            pss = sum(tree_pss_kib(s.proc.pid) for s in sandboxes) / 1024
            cgroups = sum(cgroup_bytes(s.name) for s in sandboxes) / 2**20
        finally:
            pool.close()
        count = len(sandboxes)
        rows.append({"pool_size": count, "pss_mib": round(pss, 1),
                     "pss_mib_per_sandbox": round(pss / count, 1),
                     "cgroup_mib": round(cgroups, 1), "cgroup_mib_per_sandbox": round(cgroups / count, 1)})
        print(json.dumps({"memory": rows[-1]}), file=sys.stderr, flush=True)
    return rows


def tree_pss_kib(root: int) -> int:
    """Proportional set size of ``root`` and its descendants, KiB."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree.update(children)
        frontier = children
    total = 0
    for pid in tree:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total


def cgroup_bytes(name: str) -> int:
    return int(Path(f"/sys/fs/cgroup/memory/sandq/{name}/memory.usage_in_bytes").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small samples, for trying the benchmark out")
    parser.add_argument("--phases", default="cold,throughput,latency,batch,memory")
    parser.add_argument("--pool", default="threads", choices=["threads", "prefork"])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--n", type=int, default=60, help="back to back, interactive pace, cold latency")
    parser.add_argument("--throughput-n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--poisson-n", type=int, default=300)
    parser.add_argument("--batch-n", type=int, default=200)
    parser.add_argument("--alone-n", type=int, default=40)
    parser.add_argument("--saturation", type=float, default=0.0, help="sandq's rate, if not measured here")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.n, args.throughput_n, args.rounds = 15, 60, 1
        args.poisson_n, args.batch_n, args.alone_n = 60, 60, 10
    phases = set(args.phases.split(","))
    report: dict[str, object] = {"benchmark": "local", "code": CODE, "pool": args.pool}
    report["load_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis = RedisServer(base)
        bench = Bench(base, redis, args.pool, args.concurrency)
        bench.settings().runsc_root.mkdir(parents=True)
        try:
            runs: dict[str, list[float]] = {name: [] for name in COLD_BUNDLES}
            for i in range(args.n):  # the two bundles alternate
                for name, quota in COLD_BUNDLES.items():
                    runs[name].append(cold_runsc(bench, 2 * i + quota, quota))
            for name, seconds in runs.items():
                for label, q in PERCENTILES:
                    report[f"{name}_runsc_{label}_ms"] = ms(percentile(seconds, q))
            saturation = args.saturation
            if "throughput" in phases:
                report["throughput"] = result = throughput(bench, args.throughput_n, args.rounds)
                saturation = float(result["sandq_per_s"])  # type: ignore[arg-type]
            if "latency" in phases:
                report["latency"] = latency(bench, args.n, args.poisson_n, saturation, runs)
            if "batch" in phases:
                report["interactive_behind_batch"] = batch(bench, args.batch_n, args.alone_n)
            if "memory" in phases:
                report["idle_memory"] = memory(bench, [1, 2, 4, 8, 16])
        finally:
            redis.stop()
    report["load_after"] = os.getloadavg()
    text = json.dumps(report)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
