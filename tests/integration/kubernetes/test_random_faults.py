"""A fifth of all API calls fail at random (seeded): every execution still ends right, in time, clean.

The faults: HTTP 500/503, 429 with Retry-After, connection resets, creates whose answer is
lost, dropped and expired (410) watches. Each execution must end with its own status or as an
``infrastructure_error`` that says why; none may outlive its deadline by more than a
generous, functional bound; and nothing may be left in the cluster: what the executions do
not delete themselves (only a delete that failed past its retries) the janitor removes.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from sandq.contract import ExecutionRequest, SandboxReport, Status
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes import run_janitor
from sandq.sandbox.kubernetes.backend import KubernetesBackend
from sandq.sandbox.kubernetes.manifests import object_name
from tests.k8s_harness.env import Env
from tests.k8s_harness.standin import FaultRule, RandomFaults

SEED = 20240607
RATE = 0.2
RETRIES = 3
SLACK_SECONDS = 75.0
"""Past timeout + kill grace: API retries and backoff, and pod start-up on a shared machine fit
inside; a lost watch event must not leave an execution waiting for its backstop (the Job's
activeDeadlineSeconds + 30 s, minutes away)."""

MIX: list[tuple[str, ExecutionRequest, Status, str | None]] = [
    *[(f"ok-{i}", ExecutionRequest(code=f"print({i} * 3)", timeout_seconds=30), Status.SUCCEEDED,
       f"{i * 3}\n") for i in range(10)],
    *[(f"fail-{i}", ExecutionRequest(code=f"import sys\nprint('no {i}')\nsys.exit(3)", timeout_seconds=30),
       Status.FAILED, f"no {i}\n") for i in range(5)],
    *[(f"slow-{i}", ExecutionRequest(code="import time\nprint('zz', flush=True)\ntime.sleep(60)",
                                     timeout_seconds=2), Status.TIMED_OUT, None) for i in range(5)],
]


def _run(
    backend: KubernetesBackend, execution_id: str, request: ExecutionRequest
) -> tuple[SandboxReport, float]:
    start = time.monotonic()
    try:
        report = backend.run(execution_id, request)
    except InfrastructureFault as fault:  # what the worker turns into infrastructure_error
        report = SandboxReport(status=Status.INFRASTRUCTURE_ERROR, error=str(fault))
    return report, time.monotonic() - start


@pytest.mark.timeout(300)
def test_twenty_executions_under_random_api_faults(env: Env) -> None:
    faults = RandomFaults(rate=RATE, seed=SEED)
    api = env.running.api
    api.random_faults = faults
    # Watches are few (two streams per worker), so a fifth of them may be none at all: on top
    # of the random faults, the first watches are dropped and expired, and open watches are
    # cut mid-stream at random moments while the executions run.
    api.faults += [FaultRule("watch", "pods", kind="drop"), FaultRule("watch", "jobs", kind="gone"),
                   FaultRule("watch", "pods", kind="abort")]
    done = threading.Event()
    cuts: list[int] = []

    def cut_watches() -> None:
        pick = random.Random(SEED)
        while not done.wait(pick.uniform(0.5, 2.5)):
            cuts.append(env.running.cut_watches())

    cutter = threading.Thread(target=cut_watches, daemon=True)
    backend = env.backend(api_retries=RETRIES, concurrency=10)  # one worker process, 10 at once
    try:
        cutter.start()
        with ThreadPoolExecutor(10) as pool:
            outcomes = list(pool.map(lambda item: _run(backend, item[0], item[1]), MIX))
    finally:
        done.set()
        cutter.join(10)
        api.random_faults = None
        backend.close()

    assert sum(faults.injected.values()) >= 10, f"too few faults injected to mean anything: {faults.injected}"
    kinds = {kind for (_, _, kind, _) in faults.injected}
    assert {"status", "abort"} <= kinds, faults.injected
    assert sum(cuts) >= 2, f"no watch was cut mid-stream: {cuts}"
    assert sum(c.verb == "watch" for c in env.calls) >= 5, "the watches did not resume"
    wrong = {}
    for (name, request, status, stdout), (report, seconds) in zip(MIX, outcomes, strict=True):
        if report.status is Status.INFRASTRUCTURE_ERROR:
            if not report.error:
                wrong[name] = "infrastructure_error without a reason"
        elif report.status is not status:
            wrong[name] = f"{report.status} ({report.error}) instead of {status}"
        elif stdout is not None and report.stdout != stdout:
            wrong[name] = f"stdout {report.stdout!r}"
        bound = request.timeout_seconds + env.settings.kill_grace_seconds + SLACK_SECONDS
        if seconds > bound:
            wrong[name] = f"took {seconds:.0f} s, more than {bound:.0f} s"
    assert wrong == {}, wrong
    ended = Counter(report.status for report, _ in outcomes)
    print(f"faults injected: {faults.injected}; watches cut: {cuts}; outcomes: {dict(ended)}")
    assert ended[Status.INFRASTRUCTURE_ERROR] <= len(MIX) // 4, (ended, [r.error for r, _ in outcomes])

    # Nothing left: an execution deletes its own Job (pods and ConfigMap follow), unless even
    # that delete failed past its retries; only such Jobs may remain, for the janitor.
    left = env.wait_clean(timeout=20)
    failed_deletes = Counter(
        c.name for c in env.calls if c.verb == "delete" and c.resource == "jobs" and c.status
    )
    for kind, name in left:
        if kind == "jobs":
            assert failed_deletes[name] > RETRIES, f"Job {name} left although its delete succeeded"
    if left:
        settings = env.settings.model_copy(update={"janitor_grace_seconds": 0})
        run_janitor(settings, at=datetime.now(UTC) + timedelta(hours=1))
    assert env.wait_clean(timeout=20) == [], "objects left behind"
    assert {object_name(name) for name, *_ in MIX} <= {c.name for c in env.calls if c.verb == "create"}
