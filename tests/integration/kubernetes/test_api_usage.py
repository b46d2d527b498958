"""Counted at the stand-in: writes, log reads and watches per execution; redelivery; janitor."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from sandq.contract import ExecutionRequest, Status
from sandq.sandbox.kubernetes import run_janitor
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.creating import launch
from sandq.sandbox.kubernetes.manifests import active_deadline_seconds, object_name
from tests.k8s_harness.env import Env
from tests.k8s_harness.standin import JOBS

WRITES = {"create", "delete", "patch", "update", "deletecollection"}


def _belongs(name: str | None, job: str) -> bool:
    return name is not None and (name == job or name.startswith(job + "-"))


@pytest.mark.timeout(180)
def test_twenty_concurrent_executions_cost_three_writes_one_log_read_and_o1_watches(env: Env) -> None:
    backend = env.backend(concurrency=20)
    ids = [f"conc-{i}" for i in range(20)]
    try:
        with ThreadPoolExecutor(20) as pool:
            reports = list(pool.map(
                lambda i: backend.run(i, ExecutionRequest(code=f"print({i.split('-')[1]} * 2)")), ids))
    finally:
        backend.close()
    assert [r.status for r in reports] == [Status.SUCCEEDED] * 20, [r.stderr[-300:] for r in reports]
    assert [r.stdout for r in reports] == [f"{i * 2}\n" for i in range(20)]
    calls = env.calls
    for execution in ids:
        job = object_name(execution)
        mine = [c for c in calls if _belongs(c.name, job)]
        verbs = Counter((c.resource, c.verb) for c in mine)
        assert sum(n for (_, verb), n in verbs.items() if verb in WRITES) <= 3, verbs
        assert verbs[("pods/log", "get")] == 1, verbs
        assert verbs == Counter({("jobs", "create"): 1, ("configmaps", "create"): 1,
                                 ("pods/log", "get"): 1, ("jobs", "delete"): 1}), verbs
    unnamed = Counter((c.resource, c.verb) for c in calls if c.name is None)
    assert unnamed == Counter({("jobs", "list"): 1, ("jobs", "watch"): 1, ("pods", "list"): 1,
                               ("pods", "watch"): 1}), unnamed
    assert not any(c.verb == "get" and c.resource in ("jobs", "pods") for c in calls)


@pytest.mark.timeout(60)
def test_redelivered_task_attaches_to_the_existing_job(env: Env) -> None:
    request = ExecutionRequest(code="print('once')")
    api = KubeApi(env.settings)
    try:
        first = launch(api, request, "redelivered")  # worker A launched, then crashed
    finally:
        api.close()
    assert first.created
    backend = env.backend()
    try:
        report = backend.run("redelivered", request)  # worker B gets the same task
    finally:
        backend.close()
    assert report.status == Status.SUCCEEDED and report.stdout == "once\n"
    assert env.cluster.pods_started == 1
    job_creates = [c for c in env.calls if c.resource == "jobs" and c.verb == "create"]
    assert len(job_creates) == 2  # the second answered 409 ...
    history = env.running.api.objects[JOBS, env.settings.namespace, object_name("redelivered")].history
    assert sum(1 for version in history if version is None) == 1  # ... one Job, created once, deleted once
    assert [c.verb for c in env.calls if c.resource == "jobs" and c.name == object_name("redelivered")] == [
        "create", "create", "get", "delete"]


@pytest.mark.timeout(60)
def test_janitor_deletes_only_jobs_past_deadline_plus_grace(env: Env) -> None:
    settings = env.settings.model_copy(update={"janitor_grace_seconds": 60})
    api = KubeApi(settings)
    try:
        for i in range(3):
            request = ExecutionRequest(code="import time\ntime.sleep(30)", timeout_seconds=30)
            launch(api, request, f"orphan-{i}")
        assert run_janitor(settings, api) == 0
        deadline = active_deadline_seconds(request, settings)
        later = datetime.now(UTC) + timedelta(seconds=deadline + 60 + 1)
        assert run_janitor(settings, api, at=later) == 3
        assert run_janitor(settings, api, at=later) == 0
    finally:
        api.close()
    assert not env.wait_clean()  # ConfigMaps and pods went with their Jobs


@pytest.mark.timeout(60)
def test_cancel_deletes_the_job(env: Env) -> None:
    backend = env.backend()
    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(backend.run, "to-cancel", ExecutionRequest(code="while True:\n    pass"))
            while env.cluster.pods_started == 0:
                time.sleep(0.05)
            time.sleep(1)  # let runsc register the container
            assert backend.cancel("to-cancel")
            report = future.result(30)
        assert not backend.cancel("to-cancel")
    finally:
        backend.close()
    assert report.status == Status.CANCELLED
