"""Worker crashes: SIGKILLed pool processes and whole workers lose nothing and run nothing twice.

The local workers here run the prefork pool, whose processes can be killed one at a time; with
the threads pool (the default) a worker is one process, and a kill is of a whole worker (as in
the Kubernetes test below, and ``tests/integration/local/test_warm_pool.py``).

Each id must end with exactly one, right result; an execution runs again only after the
process running it was killed; a redelivered execution starts in a fresh sandbox; redelivery
comes within the configured bound (``redelivery_seconds`` plus one restore check); no sandbox
is left behind.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.broker.routing import tenant_queues
from sandq.sandbox.gvisor.sandbox import OWNER_FILE, SANDBOX_PREFIX
from sandq.sandbox.kubernetes.manifests import object_name
from tests.conftest import RedisServer, make_settings
from tests.integration.reliability.conftest import (
    Crashes,
    ProbedWorker,
    Start,
    record_results,
    rounds,
    sandboxes,
    summary,
    unacked_of,
    wait_for,
)
from tests.k8s_harness.cluster import Cluster
from tests.k8s_harness.env import make_settings as k8s_settings
from tests.k8s_harness.standin import JOBS, RunningStandIn

REDELIVERY_SECONDS = 5
ROUNDS = rounds(6)
CONCURRENCY = 2
CHILD_KILL_BOUND = 15.0
"""Seconds: Celery requeues a killed pool process's task at once (measured 0.1 to 3.9 s)."""
SLACK_SECONDS = 10.0
"""Room for a busy 2-core machine past the configured bound (a free slot, a sandbox start)."""



@dataclass(frozen=True)
class Job:
    """One execution of the load and the result it must end with."""

    id: str
    code: str
    status: Status
    stdout: str
    exit_code: int


def load(rng: random.Random, round_no: int) -> list[Job]:
    """A quick success, a failure and two sleeps of 1 to 3 s (the first, of 3 s, is the one killed)."""
    tag = f"r{round_no}"
    jobs = [
        Job(f"{tag}-quick", f"print('{tag}-quick')", Status.SUCCEEDED, f"{tag}-quick\n", 0),
        Job(f"{tag}-fail", f"print('{tag}-fail')\nraise SystemExit(3)", Status.FAILED, f"{tag}-fail\n", 3),
    ]
    for n, seconds in enumerate([3, rng.choice([1, 2, 3])]):  # the first is the one killed
        code = f"import time\ntime.sleep({seconds})\nprint('{tag}-sleep{n}')"
        jobs.append(Job(f"{tag}-sleep{n}", code, Status.SUCCEEDED, f"{tag}-sleep{n}\n", 0))
    return jobs


def owners(settings: Settings) -> dict[str, int | None]:
    """The owning process of each sandbox bundle (None if unreadable)."""
    out: dict[str, int | None] = {}
    for name in os.listdir(settings.bundle_dir):
        if not name.startswith(SANDBOX_PREFIX):  # the runner directory all sandboxes share
            continue
        try:
            out[name] = int((settings.bundle_dir / name / OWNER_FILE).read_text())
        except (OSError, ValueError):
            out[name] = None
    return out


def test_killed_pool_processes_and_workers_lose_nothing_and_run_nothing_twice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_server.url,
        tmp_path,
        redelivery_seconds=REDELIVERY_SECONDS,
        concurrency=CONCURRENCY,
        warm_pool_min=1, warm_pool_max=1,
        sweep_interval_seconds=1,
    )
    client = Client(settings)
    crashes = Crashes(redis.Redis.from_url(settings.redis_url), settings.queue)
    rng = random.Random(7)
    logs = iter(tmp_path / f"worker{n}.log" for n in range(100))
    workers = [ProbedWorker(settings, next(logs), CONCURRENCY, "prefork") for _ in range(2)]
    fresh: list[tuple[str, set[str]]] = []  # (redelivered id, sandboxes of the processes killed)
    jobs: list[Job] = []
    try:
        for worker in workers:
            worker.wait_ready()
        for round_no in range(ROUNDS):
            batch = load(rng, round_no)
            jobs += batch
            for job in batch:
                client.submit(ExecutionRequest(code=job.code, timeout_seconds=30), execution_id=job.id)
            victim, owner = _wait_for_victim(crashes, batch, workers)
            time.sleep(max(0.0, victim.at + 0.7 - time.time()))  # well inside its sandbox's sleep
            assert not client.async_result(victim.id).ready(), client.wait(victim.id, 1)
            before = owners(settings)
            if round_no % 2 == 0:
                kill = crashes.kill("pool_child", lambda: _kill_one(victim.pid))
            else:
                kill = crashes.kill("whole_worker", owner.kill_tree)
                workers[workers.index(owner)] = ProbedWorker(settings, next(logs), CONCURRENCY, "prefork")
            killed_sandboxes = {name for name, owner in before.items() if owner in kill.pids}
            assert killed_sandboxes, "the killed execution had no sandbox"
            for job in batch:
                result = client.wait(job.id, timeout=120)
                outcome = (result.status, result.stdout, result.exit_code)
                assert outcome == (job.status, job.stdout, job.exit_code), (job.id, result)
                last = crashes.started(job.id)
                assert last is not None
                if last.at > kill.at:
                    fresh.append((job.id, killed_sandboxes))
            assert _run_again_or_done_before(crashes, client, victim.id, kill.at)

        # Nothing more runs after the results: no stray redelivery, nothing left unacknowledged.
        count = sum(len(s) for s in crashes.starts().values())
        time.sleep(REDELIVERY_SECONDS + 2 * settings.heartbeat_seconds + 2)
        assert sum(len(s) for s in crashes.starts().values()) == count
        assert unacked_of(crashes.client, set(tenant_queues(settings, []))) == []
        assert crashes.unexplained_starts() == [], "an execution ran twice while a live worker held it"
        assert sorted(crashes.starts()) == sorted(j.id for j in jobs)

        # A redelivered execution starts in a fresh sandbox, never one of the killed processes.
        for execution_id, killed_sandboxes in fresh:
            result = client.wait(execution_id, timeout=5)
            assert result.sandbox_name and result.sandbox_name not in killed_sandboxes, execution_id

        delays = crashes.delays()
        bound = REDELIVERY_SECONDS + settings.heartbeat_seconds
        assert min(len(delays["pool_child"]), len(delays["whole_worker"])) >= ROUNDS // 2 - 2, delays
        assert max(delays["pool_child"]) < CHILD_KILL_BOUND, delays
        assert max(delays["whole_worker"]) < bound + SLACK_SECONDS, delays
        record_results(
            "gvisor",
            {
                "redelivery_seconds": REDELIVERY_SECONDS,
                "heartbeat_seconds": settings.heartbeat_seconds,
                "bound_seconds": bound,
                "kills": len(crashes.kills),
                "executions": len(jobs),
                "pool_child": summary(delays["pool_child"]),
                "whole_worker": summary(delays["whole_worker"]),
            },
        )

        # The dead workers' sandboxes are swept by the live ones; a stopped worker leaves none.
        live = set().union(*(w.pool_pids() for w in workers))
        wait_for(lambda: set(owners(settings).values()) <= live, 30, "orphaned sandboxes swept")
        for worker in workers:
            worker.stop()
            assert worker.proc.returncode == 0, worker.log.read_text()[-3000:]
        assert sandboxes(settings) == ([], [])
    finally:
        for worker in workers:
            worker.stop()
        client.close()


def _wait_for_victim(
    crashes: Crashes, batch: list[Job], workers: list[ProbedWorker]
) -> tuple[Start, ProbedWorker]:
    """The first sleep of ``batch`` once it has started, and the worker running it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        processes = [(worker, worker.pids()) for worker in workers]
        for job in batch:
            start = crashes.started(job.id) if job.id.endswith("sleep0") else None
            if start is None:
                continue
            for worker, pids in processes:
                if start.pid in pids:
                    return start, worker
        time.sleep(0.05)
    raise AssertionError("no execution of the round started")


def _run_again_or_done_before(crashes: Crashes, client: Client, execution_id: str, killed_at: float) -> bool:
    """True if the execution ran again after the kill, or had finished just before it (a lost race)."""
    again = crashes.started(execution_id)
    finished_at = client.wait(execution_id, timeout=5).finished_at
    return (again is not None and again.at > killed_at) or (
        finished_at is not None and finished_at.timestamp() <= killed_at
    )


def _kill_one(pid: int) -> set[int]:
    os.kill(pid, 9)
    return {pid}


K8S_ROUNDS = max(2, ROUNDS // 5)


@pytest.mark.k8s
def test_a_redelivered_kubernetes_execution_attaches_to_its_job(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Real worker processes (the threads pool, the Kubernetes default) killed whole mid-Job.

    The API stand-in and its runsc kubelet run in this process; the workers reach them through
    a kubeconfig, as they would a cluster. With the threads pool the worker process is the one
    running the task, so each kill is of a whole worker.
    """
    running = RunningStandIn().start()
    cluster = Cluster(running, tmp_path / "cluster")
    created: list[str] = []
    running.api.hooks.append(
        lambda verb, resource, _ns, obj: (
            created.append(obj["metadata"]["name"]) if (verb, resource) == ("create", "jobs") else None
        )
    )
    settings = k8s_settings(
        running.write_kubeconfig(tmp_path / "kubeconfig"),
        tmp_path,
        redis_url=redis_server.url,
        queue=f"sandq-k8s-{os.getpid()}",
        backend="kubernetes",
        redelivery_seconds=REDELIVERY_SECONDS,
        concurrency=CONCURRENCY,
        metrics_port=0,
    )
    client = Client(settings)
    crashes = Crashes(redis.Redis.from_url(settings.redis_url), settings.queue)
    logs = iter(tmp_path / f"worker{n}.log" for n in range(10))
    workers = [ProbedWorker(settings, next(logs), CONCURRENCY) for _ in range(2)]
    jobs: list[Job] = []
    try:
        for worker in workers:
            worker.wait_ready()
        for round_no in range(K8S_ROUNDS):
            tag = f"k{round_no}"
            batch = [
                Job(f"{tag}-quick", f"print('{tag}-quick')", Status.SUCCEEDED, f"{tag}-quick\n", 0),
                Job(
                    f"{tag}-sleep0",
                    f"import time\ntime.sleep(3)\nprint('{tag}')",
                    Status.SUCCEEDED,
                    f"{tag}\n",
                    0,
                ),
            ]
            jobs += batch
            for job in batch:
                client.submit(ExecutionRequest(code=job.code, timeout_seconds=30), execution_id=job.id)
            victim, owner = _wait_for_victim(crashes, batch, workers)
            name = object_name(victim.id)
            wait_for(
                lambda: running.api.get(JOBS, settings.namespace, name) is not None, 60, "the Job exists"
            )
            kill = crashes.kill("whole_worker", owner.kill_tree)
            workers[workers.index(owner)] = ProbedWorker(settings, next(logs), CONCURRENCY)
            for job in batch:
                result = client.wait(job.id, timeout=120)
                outcome = (result.status, result.stdout, result.exit_code)
                assert outcome == (job.status, job.stdout, job.exit_code), (job.id, result)
            assert _run_again_or_done_before(crashes, client, victim.id, kill.at)

        # One Job (and one pod) ever per execution: the redelivered ones attached to theirs.
        assert sorted(created) == sorted(object_name(j.id) for j in jobs)
        assert cluster.pods_started == len(jobs)
        assert crashes.unexplained_starts() == []
        delays = crashes.delays()
        bound = REDELIVERY_SECONDS + settings.heartbeat_seconds
        assert (
            len(delays["whole_worker"]) >= K8S_ROUNDS and max(delays["whole_worker"]) < bound + SLACK_SECONDS
        )
        record_results(
            "kubernetes",
            {
                "redelivery_seconds": REDELIVERY_SECONDS,
                "bound_seconds": bound,
                "kills": len(crashes.kills),
                "executions": len(jobs),
                "jobs_created": len(created),
                "whole_worker": summary(delays["whole_worker"]),
            },
        )
        wait_for(lambda: not running.leftovers(), 30, "every Job, pod and ConfigMap deleted")
    finally:
        for worker in workers:
            worker.stop()
        client.close()
        cluster.close()
        running.stop()
