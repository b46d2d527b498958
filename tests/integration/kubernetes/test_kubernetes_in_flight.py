"""Many executions in flight in one process: one watch, no helper thread per execution, cheap waits."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandq.contract import ExecutionRequest, Status
from sandq.sandbox.kubernetes.manifests import object_name
from tests.k8s_harness.cluster import HELD_OUTPUT
from tests.k8s_harness.env import Env

IN_FLIGHT = 100


@pytest.mark.timeout(300)
def test_hundred_in_flight_share_one_watch_and_no_extra_threads(env: Env) -> None:
    env.cluster.hold = True
    env.cluster.mount_backoff_max = 2  # 100 launches at once on 2 shared cores: ConfigMaps may lag seconds
    backend = env.backend(concurrency=IN_FLIGHT, api_qps=50, api_burst=50, api_timeout_seconds=30)
    ids = [f"fl-{i}" for i in range(IN_FLIGHT)]
    before = set(threading.enumerate())  # what earlier tests of this process left running
    try:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(backend.run, i, ExecutionRequest(code="print(1)")) for i in ids]
            try:
                end = time.monotonic() + 240
                while env.cluster.held < IN_FLIGHT and time.monotonic() < end:
                    time.sleep(0.1)
                assert env.cluster.held == IN_FLIGHT
                # Every execution waits in its own caller thread: besides the pool and the stand-in,
                # only the two watch streams (and the client's connection pool) run.
                started = [t.name for t in threading.enumerate() if t not in before]
                ours = sorted(name for name in started if name.startswith("sandq-"))
                assert ours == ["sandq-watch-jobs", "sandq-watch-pods"]
                assert not any(f.done() for f in futures)
            finally:
                env.cluster.release()  # a failed check must not leave the pool waiting on held pods
            reports = [f.result(120) for f in futures]
    finally:
        backend.close()
    assert all(r.status == Status.SUCCEEDED and r.stdout == HELD_OUTPUT for r in reports), reports[:3]
    unnamed = Counter((c.resource, c.verb) for c in env.calls if c.name is None)
    assert unnamed == Counter({("jobs", "list"): 1, ("jobs", "watch"): 1, ("pods", "list"): 1,
                               ("pods", "watch"): 1}), unnamed
    for execution in ids[:10]:
        job = object_name(execution)
        mine = Counter((c.resource, c.verb) for c in env.calls
                       if c.name is not None and (c.name == job or c.name.startswith(job + "-")))
        assert mine == Counter({("jobs", "create"): 1, ("configmaps", "create"): 1, ("pods/log", "get"): 1,
                                ("jobs", "delete"): 1}), mine


def test_watch_cache_keeps_no_pod_spec_and_wakes_only_the_jobs_listeners(env: Env) -> None:
    backend = env.backend()
    watch = backend.watch
    try:
        pod = {"metadata": {"name": "sq-a-x", "labels": {"app.kubernetes.io/managed-by": "sandq"},
                            "managedFields": [{"manager": "kubelet"}],
                            "ownerReferences": [{"kind": "Job", "name": "sq-a", "uid": "uid-a"}]},
               "spec": {"containers": [{"name": "runner", "env": [{"name": "X", "value": "y" * 4096}]}]},
               "status": {"phase": "Running"}}
        with watch.listen(["sq-a"]) as mine, watch.listen(["sq-b"]) as other:
            watch._apply("pods", "ADDED", pod)
            assert mine.is_set() and not other.is_set()
        _, pods = watch.snapshot("sq-a", "uid-a")
        assert pods == [{"metadata": {k: v for k, v in pod["metadata"].items() if k != "managedFields"},
                         "status": {"phase": "Running"}}]
        watch._apply("pods", "DELETED", pod)
        assert watch.snapshot("sq-a", "uid-a") == (None, [])
    finally:
        backend.close()
