"""The conformance corpus (cases.yaml): the same requests, through the whole queue, on every backend.

Each backend gets a real ``sandq worker`` process on the session's Redis: the local gVisor
backend, the Kubernetes backend against the API stand-in (whose kubelet runs each pod in
runsc) on its Job path and on its warm path (``kubernetes-warm``: agent-sandbox's controllers
and a warm pool of gVisor sandboxes on the stand-in, the job delivered through ``pods/attach``),
and the simulated backend. Every group of cases is submitted at once; after each group the
worker must still be alive and serve a normal execution, and on Kubernetes no Job, Pod,
ConfigMap, claim or Sandbox may be left (beyond the warm pool's own). Where the backends truly
differ, a case says so (``local:``, ``warm:``, with the reason); the warm path runs the pod's
runner, so it ends as the Job path does but where its pod lacks the Job pod's /sandq files, and
the cases of another shape than the pool's run as Jobs there.
The simulated backend runs no code at all, so of the corpus only what never reaches a sandbox
applies to it: rejected requests, and the worker's survival. Every backend that runs code has
the same sandbox environment: every library of the lock imports, at the lock's version (the
stand-in's pods, warm ones too, mount the environment as the sandbox image holds it).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sandq import Client, ExecutionRequest, Settings, Status
from sandq.broker.app import EXECUTE_TASK
from sandq.contract import ExecutionResult, Submission
from sandq.sandbox.environment import default_lock, pinned
from sandq.sandbox.kubernetes.manifests import fits_warm, object_name
from sandq.validation import RequestRejected, validate_request
from tests.conformance.corpus import (
    NORMAL,
    Case,
    groups,
    load_cases,
    mismatches,
    rejected_cases,
    runnable_cases,
)
from tests.conftest import CANARY, RedisServer, WorkerProcess, make_settings
from tests.k8s_harness.env import Env, kubernetes_env

pytestmark = pytest.mark.timeout(900)
WAIT = 300
"""Longest wait for one result: generous, the machine is shared."""
RUNNABLE = [c.name for c in runnable_cases()]
REJECTED = [c.name for c in rejected_cases()]
CASES = {c.name: c for c in load_cases()}
RUNS_CODE = ["gvisor", "kubernetes", "kubernetes-warm"]
BACKENDS = [*RUNS_CODE, "simulated"]
IMPORT_EVERY_LIBRARY = """\
import importlib, importlib.metadata as metadata
modules = {}
for module, dists in metadata.packages_distributions().items():
    for dist in dists:
        if module.isidentifier():
            modules.setdefault(dist, []).append(module)
for dist in sorted(modules):
    imported = [importlib.import_module(m) for m in sorted(modules[dist])]
    print(dist, metadata.version(dist), *(f"{m.__name__}={getattr(m, '__version__', '-')}" for m in imported))
"""
"""Imports every top-level module of every installed distribution; prints each one's version."""
LIBRARIES = "import_every_library"
WARM_POOL = 4
"""The warm pool of ``kubernetes-warm``: one sandbox per execution the worker runs at once."""


@dataclass
class Deployment:
    """One backend's worker, its client, and (on Kubernetes) the stand-in it runs on."""

    backend: str
    client: Client
    worker: WorkerProcess
    kube: Env | None = None
    results: dict[str, ExecutionResult] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    normal: dict[str, ExecutionResult | None] = field(default_factory=dict)
    alive: dict[str, bool] = field(default_factory=dict)
    leftovers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _libraries: ExecutionResult | None = None

    def libraries(self) -> ExecutionResult:
        """The run of ``IMPORT_EVERY_LIBRARY`` (once per deployment); on ``kubernetes-warm`` in the
        warm pool's shape, so that a warm pod runs it."""
        if self._libraries is None:
            shape = {} if self.backend == "kubernetes-warm" else {"cpu_limit": "2", "mem_limit": "1Gi"}
            request = ExecutionRequest(code=IMPORT_EVERY_LIBRARY, timeout_seconds=600, **shape)
            handle = self.client.submit(request, execution_id=_tagged(LIBRARIES))
            self.ids[LIBRARIES] = handle.id
            self._libraries = handle.result(900)
        return self._libraries

    def run_corpus(self) -> None:
        """Every runnable group at once, then the worker's health (and on Kubernetes, what is left)."""
        for group, cases in groups().items():
            handles = {c.name: self.client.submit(c.request, execution_id=_tagged(c.name)) for c in cases}
            self.ids.update({name: handle.id for name, handle in handles.items()})
            for name, handle in handles.items():
                self.results[name] = handle.result(WAIT)
            self.alive[group] = self.worker.proc.poll() is None
            self.normal[group] = self.client.run(NORMAL, timeout=WAIT) if self.alive[group] else None
            self.leftovers[group] = self.kube.wait_clean(20, keep_pool=True) if self.kube is not None else []

    def placed_warm(self, name: str) -> bool:
        """Whether case ``name`` ran on the warm path (a claim was made for it)."""
        assert self.kube is not None
        claim = object_name(self.ids[name])
        return any(c.resource == "sandboxclaims" and c.verb == "create" and c.name == claim
                   for c in self.kube.calls)


class Deployments:
    """Each backend's deployment, started on first use and kept for the module."""

    def __init__(self, redis_server: RedisServer, base: Path) -> None:
        self.redis_server = redis_server
        self.base = base
        self.stack = ExitStack()
        self.started: dict[str, Deployment] = {}

    def __getitem__(self, backend: str) -> Deployment:
        if backend not in self.started:
            self.started[backend] = self._start(backend)
            if backend in RUNS_CODE:
                self.started[backend].run_corpus()
        return self.started[backend]

    def _start(self, backend: str) -> Deployment:
        workdir = self.base / backend
        overrides: dict[str, Any] = {"backend": backend}
        kube = None
        args: tuple[str, ...] = ("-m", "sandq", "worker", "--concurrency=4")
        if backend.startswith("kubernetes"):
            warm = backend == "kubernetes-warm"
            kube = self.stack.enter_context(kubernetes_env(warm_pool=WARM_POOL if warm else None))
            keep = ("namespace", "kubeconfig_path", "api_backoff_seconds", "api_timeout_seconds",
                    "watch_timeout_seconds", "unschedulable_timeout_seconds", "kill_grace_seconds",
                    "api_qps", "api_burst")
            overrides.update({name: getattr(kube.settings, name) for name in keep})
            overrides.update(backend="kubernetes", kubernetes_mode="warm" if warm else "job")
        if backend == "simulated":
            args = (*args, "--pool=threads")
        settings = make_settings(self.redis_server.url, workdir, **overrides)
        client = Client(settings)
        self.stack.callback(client.close)
        log = self.base / f"{backend}-worker.log"
        worker = WorkerProcess(settings, log, {CANARY: "leaked-if-visible"}, args=args)
        self.stack.callback(worker.stop)
        worker.wait_ready(client)
        return Deployment(backend, client, worker, kube)

    def close(self) -> None:
        self.stack.close()


@pytest.fixture(scope="module")
def deployments(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployments]:
    deployed = Deployments(redis_server, tmp_path_factory.mktemp("conformance"))
    try:
        yield deployed
    finally:
        deployed.close()


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


# ---------------------------------------------------------------------------- every backend that runs code


@pytest.mark.parametrize("backend", RUNS_CODE)
@pytest.mark.parametrize("name", RUNNABLE)
def test_case(deployments: Deployments, backend: str, name: str) -> None:
    result = deployments[backend].results[name]
    problems = mismatches(CASES[name], result, local=backend == "gvisor", warm=backend.endswith("warm"))
    assert problems == [], (result.status, result.error, result.stderr[-500:])
    assert backend.startswith(result.backend) and result.sandbox_name
    assert result.attempts == 1, "a user's program must never be retried as an infrastructure fault"
    if backend == "kubernetes-warm":  # the pool's shape runs warm; another shape, as a Job
        request = ExecutionRequest.model_validate(CASES[name].request)
        assert deployments[backend].placed_warm(name) == fits_warm(request)


@pytest.mark.parametrize("backend", RUNS_CODE)
@pytest.mark.parametrize("group", list(groups()))
def test_backend_serves_and_cleans_up_after_each_group(
    deployments: Deployments, backend: str, group: str
) -> None:
    deployment = deployments[backend]
    assert deployment.alive[group], "the worker process died"
    normal = deployment.normal[group]
    assert normal is not None and normal.status is Status.SUCCEEDED, normal
    assert normal.stdout == "still serving\n"
    assert deployment.leftovers[group] == [], "no Job, Pod, ConfigMap, claim or Sandbox may be left"


def _summary(result: ExecutionResult) -> dict[str, Any]:
    keep: dict[str, Any] = {"status": result.status}
    if result.status is not Status.TIMED_OUT:  # 137 from the runner, 124 from a Job's deadline
        keep["exit_code"] = result.exit_code
    keep["output_files"] = sorted(f.name for f in result.output_files)
    return keep


def test_backends_agree(deployments: Deployments) -> None:
    """Outside the cases documented to differ (``local:``), the backends end alike: same status, exit
    code and output files (each case's own expectations check the streams on each backend)."""
    local, kube = deployments["gvisor"], deployments["kubernetes"]
    differ = {
        name: (_summary(local.results[name]), _summary(kube.results[name]))
        for name in RUNNABLE
        if CASES[name].local_expect is None and _summary(local.results[name]) != _summary(kube.results[name])
    }
    assert differ == {}


def test_warm_path_ends_as_the_job_path(deployments: Deployments) -> None:
    """Both run the pod's runner: every case ends alike (status, exit code, output files, and the
    streams where the case pins them), except where a case says otherwise (``warm:``)."""
    job, warm = deployments["kubernetes"], deployments["kubernetes-warm"]

    def ended(name: str, result: ExecutionResult) -> dict[str, Any]:
        expect = CASES[name].expect
        streams = {stream: getattr(result, stream) for stream in ("stdout", "stderr") if stream in expect}
        return {**_summary(result), **streams}

    differ = {
        name: (ended(name, job.results[name]), ended(name, warm.results[name]))
        for name in RUNNABLE
        if CASES[name].warm_expect is None
        and ended(name, job.results[name]) != ended(name, warm.results[name])
    }
    assert differ == {}


# ---------------------------------------------------------------------------- the sandbox environment


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported(result: ExecutionResult) -> dict[str, str]:
    """Distribution (normalised name) to version, from ``IMPORT_EVERY_LIBRARY``'s output."""
    assert result.status is Status.SUCCEEDED, (result.status, result.error, result.stderr[-2000:])
    return {_normalized(line.split()[0]): line.split()[1] for line in result.stdout.splitlines()}


@pytest.mark.parametrize("backend", RUNS_CODE)
def test_every_library_of_the_lock_imports_at_its_version(deployments: Deployments, backend: str) -> None:
    result = deployments[backend].libraries()
    locked = {_normalized(name): version for name, version in (p.split("==") for p in pinned(default_lock()))}
    assert _imported(result) == locked  # nothing missing, nothing more (no host library)
    assert result.stderr == ""
    printed = {line.split()[0]: line.split()[2:] for line in result.stdout.splitlines()}
    assert printed["scikit-learn"] == [f"sklearn={locked['scikit-learn']}"]
    assert printed["pandas"] == [f"pandas={locked['pandas']}"]


def test_every_sandbox_imports_the_same_libraries(deployments: Deployments) -> None:
    """The local sandbox, the Job pod and the warm pod (the warm deployment runs it in its pool)."""
    local, kube, warm = (deployments[backend].libraries() for backend in RUNS_CODE)
    assert local.stdout == kube.stdout == warm.stdout
    assert local.stdout.count("\n") == len(pinned(default_lock()))
    assert deployments["kubernetes-warm"].placed_warm(LIBRARIES)


# ---------------------------------------------------------------------------- rejected, on every backend


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_at_the_client(client: Client, name: str) -> None:
    case = CASES[name]
    handle = client.submit(case.request)
    assert handle.ready(), "a rejected request is answered at once"
    result = handle.result(0)
    assert mismatches(case, result) == [], result.error
    assert result.attempts == 0 and result.sandbox_name is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_rejected_at_the_worker_when_the_client_is_skipped(deployments: Deployments, backend: str) -> None:
    deployment = deployments[backend]
    client = deployment.client
    calls_before = len(deployment.kube.calls) if deployment.kube is not None else 0
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
    assert deployment.worker.proc.poll() is None
    if deployment.kube is not None:
        time.sleep(0.5)
        writes = [c for c in deployment.kube.calls[calls_before:] if c.verb not in ("list", "watch")]
        assert writes == [], "a rejected request must not reach the cluster"
