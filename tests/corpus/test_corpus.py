"""The bad-input corpus (cases.yaml) on both backends.

Local gVisor: through the whole queue (client -> Redis -> the session's worker process),
each group of cases at once (the worker runs 4 at a time). Kubernetes: the same requests
through the worker's own ``execute`` on a ``KubernetesBackend`` talking to the API stand-in,
whose kubelet runs each pod in runsc. After every group the worker process must still be
alive and a normal execution must succeed; at the end no Job, Pod or ConfigMap is left.
Rejected cases are refused by validation wherever it runs: at the client, at the worker
(a raw message that skipped the client), and before the Kubernetes backend makes any call.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandq import Client, Settings, Status
from sandq.broker.app import EXECUTE_TASK
from sandq.contract import ExecutionResult, Submission
from sandq.validation import RequestRejected, validate_request
from sandq.worker.backend import InfrastructureFault
from sandq.worker.execution import execute
from sandq.worker.kubernetes.backend import KubernetesBackend
from tests.conftest import WorkerProcess
from tests.corpus.corpus import NORMAL, Case, groups, load_cases, mismatches, rejected_cases, runnable_cases
from tests.k8s.conftest import make_settings as k8s_settings
from tests.k8s_harness.cluster import Cluster
from tests.k8s_harness.standin import RunningStandIn

pytestmark = pytest.mark.timeout(900)
WAIT = 300
"""Longest wait for one result: generous, the machine is shared."""
RUNNABLE = [c.name for c in runnable_cases()]
REJECTED = [c.name for c in rejected_cases()]
CASES = {c.name: c for c in load_cases()}


@dataclass
class Outcomes:
    """What one backend made of the corpus, and of the normal run after each group."""

    results: dict[str, ExecutionResult] = field(default_factory=dict)
    normal: dict[str, ExecutionResult | None] = field(default_factory=dict)
    alive: dict[str, bool] = field(default_factory=dict)
    leftovers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    seconds: float = 0.0


def _submission(case: Case, execution_id: str) -> Submission:
    return Submission(id=execution_id, enqueued_at=datetime.now(UTC), request=dict(case.request))


def _tagged(name: str) -> str:
    return f"corpus-{name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------------------- the corpus itself


def test_corpus_is_large_justified_and_consistent() -> None:
    cases = load_cases()
    assert len(cases) >= 30
    assert len({c.name for c in cases}) == len(cases), "case names must be unique"
    for case in cases:
        assert len(case.why) >= 40, f"{case.name}: say why this status"
        assert isinstance(case.status, Status)
        try:
            validate_request(case.request, Settings())
            valid = True
        except RequestRejected:
            valid = False
        assert valid == (case.status is not Status.REJECTED), case.name
    statuses = {c.status for c in cases}
    assert statuses >= {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.OOM_KILLED,
                        Status.OUTPUT_LIMIT_EXCEEDED, Status.REJECTED}


# ---------------------------------------------------------------------------- local gVisor, via the queue


@pytest.fixture(scope="module")
def gvisor(client: Client, worker: WorkerProcess) -> Outcomes:
    outcomes = Outcomes()
    start = time.monotonic()
    for group, cases in groups().items():
        handles = {c.name: client.submit(c.request, execution_id=_tagged(c.name)) for c in cases}
        for name, handle in handles.items():
            outcomes.results[name] = handle.result(WAIT)
        outcomes.alive[group] = worker.proc.poll() is None
        outcomes.normal[group] = client.run(NORMAL, timeout=WAIT) if outcomes.alive[group] else None
    outcomes.seconds = time.monotonic() - start
    return outcomes


@pytest.mark.parametrize("name", RUNNABLE)
def test_case_on_local_gvisor_through_the_queue(gvisor: Outcomes, name: str) -> None:
    result = gvisor.results[name]
    problems = mismatches(CASES[name], result, local=True)
    assert problems == [], (result.status, result.error, result.stderr[-500:])
    assert result.backend == "gvisor" and result.sandbox_name
    assert result.attempts == 1, "a user's program must never be retried as an infrastructure fault"


@pytest.mark.parametrize("group", list(groups()))
def test_worker_survives_each_group(gvisor: Outcomes, group: str) -> None:
    assert gvisor.alive[group], "the worker process died"
    normal = gvisor.normal[group]
    assert normal is not None and normal.status is Status.SUCCEEDED, normal
    assert normal.stdout == "still serving\n"


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_at_the_client(client: Client, name: str) -> None:
    case = CASES[name]
    handle = client.submit(case.request)
    assert handle.ready(), "a rejected request is answered at once"
    result = handle.result(0)
    assert mismatches(case, result) == [], result.error
    assert result.attempts == 0 and result.sandbox_name is None


def test_rejected_at_the_worker_when_the_client_is_skipped(client: Client, worker: WorkerProcess) -> None:
    ids = {}
    for case in rejected_cases():
        execution_id = _tagged(case.name)
        payload = _submission(case, execution_id).model_dump(mode="json")
        client.app.send_task(EXECUTE_TASK, args=[payload], task_id=execution_id, queue=client.settings.queue)
        ids[case.name] = execution_id
    for name, execution_id in ids.items():
        result = client.wait(execution_id, WAIT)
        assert mismatches(CASES[name], result) == [], (name, result.error)
        assert result.sandbox_name is None and result.backend == "", name
    assert worker.proc.poll() is None


# ---------------------------------------------------------------------------- Kubernetes, via the stand-in


@dataclass
class Kube:
    running: RunningStandIn
    cluster: Cluster
    settings: Settings
    backend: KubernetesBackend

    def run(self, case: Case) -> ExecutionResult:
        execution_id = _tagged(case.name)
        try:
            return execute(_submission(case, execution_id), self.backend, self.settings, 1)
        except InfrastructureFault as fault:
            return ExecutionResult(id=execution_id, status=Status.INFRASTRUCTURE_ERROR, error=str(fault))

    def leftovers(self, timeout: float = 20) -> list[tuple[str, str]]:
        end = time.monotonic() + timeout
        while (left := self.running.leftovers()) and time.monotonic() < end:
            time.sleep(0.1)
        return left


@pytest.fixture(scope="module")
def kube() -> Iterator[Kube]:
    workdir = Path(tempfile.mkdtemp(prefix="sandq-corpus-"))
    running = RunningStandIn().start()
    cluster = Cluster(running, workdir / "cluster")
    settings = k8s_settings(running.write_kubeconfig(workdir / "kubeconfig"), workdir)
    backend = KubernetesBackend(settings)
    try:
        yield Kube(running, cluster, settings, backend)
    finally:
        backend.close()
        cluster.close()
        running.stop()


@pytest.fixture(scope="module")
def kubernetes(kube: Kube) -> Outcomes:
    outcomes = Outcomes()
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for group, cases in groups().items():
            for case, result in zip(cases, pool.map(kube.run, cases), strict=True):
                outcomes.results[case.name] = result
            outcomes.normal[group] = kube.run(Case("normal", group, "", NORMAL, {"status": "succeeded"}))
            outcomes.leftovers[group] = kube.leftovers()
    outcomes.seconds = time.monotonic() - start
    return outcomes


@pytest.mark.parametrize("name", RUNNABLE)
def test_case_on_kubernetes(kubernetes: Outcomes, name: str) -> None:
    result = kubernetes.results[name]
    assert mismatches(CASES[name], result) == [], (result.status, result.error, result.stderr[-500:])
    assert result.backend == "kubernetes" and result.sandbox_name


@pytest.mark.parametrize("group", list(groups()))
def test_kubernetes_backend_serves_and_cleans_up_after_each_group(kubernetes: Outcomes, group: str) -> None:
    normal = kubernetes.normal[group]
    assert normal is not None and normal.status is Status.SUCCEEDED, normal
    assert normal.stdout == "still serving\n"
    assert kubernetes.leftovers[group] == [], "no Job, Pod or ConfigMap may be left"


def test_rejected_before_the_kubernetes_backend_calls_the_api(kube: Kube) -> None:
    def writes_and_reads() -> int:
        return sum(1 for c in kube.running.api.calls if c.verb not in ("list", "watch"))

    before = writes_and_reads()
    for case in rejected_cases():
        result = kube.run(case)
        assert mismatches(case, result) == [], (case.name, result.error)
        assert result.sandbox_name is None
    assert writes_and_reads() == before, "a rejected request must not reach the cluster"


# ---------------------------------------------------------------------------- both


def _summary(result: ExecutionResult) -> dict[str, Any]:
    keep = {"status": result.status}
    if result.status is not Status.TIMED_OUT:  # 137 from the runner, 124 from a Job's deadline
        keep["exit_code"] = result.exit_code
    return keep


def test_both_backends_agree(gvisor: Outcomes, kubernetes: Outcomes) -> None:
    """Outside the cases documented to differ (``local:``), both backends end alike."""
    differ = {
        name: (_summary(gvisor.results[name]), _summary(kubernetes.results[name]))
        for name in RUNNABLE
        if CASES[name].local_expect is None
        and _summary(gvisor.results[name]) != _summary(kubernetes.results[name])
    }
    assert differ == {}
