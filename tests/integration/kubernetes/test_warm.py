"""The warm path against the stand-in: agent-sandbox's controllers, a warm pool of real gVisor sandboxes,
and the job delivered through a websocket ``pods/attach``. Faults end in exactly one result (a report,
or one ``InfrastructureFault`` when nothing ran), and nothing is left behind (the environment checks:
no claim, Sandbox or pod, and no call beyond the warm overlay's Role)."""

from __future__ import annotations

import marshal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from sandq.contract import ExecutionRequest, SandboxReport, Status, now
from sandq.sandbox import protocol
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.backend import KubernetesBackend
from sandq.sandbox.kubernetes.creating import create_or_adopt
from sandq.sandbox.kubernetes.manifests import EXECUTION_ID_ANNOTATION, claim_manifest, object_name
from sandq.sandbox.kubernetes.warm import _claims_api
from tests.k8s_harness.env import Env, kubernetes_env
from tests.k8s_harness.standin import FaultRule

WRITES = {"create", "delete", "patch", "update", "deletecollection"}
WARM = {"kubernetes_mode": "warm", "warm_claim_timeout_seconds": 20}


@pytest.fixture
def env() -> Iterator[Env]:
    with kubernetes_env(warm_pool=2, **WARM) as environment:
        yield environment


def _mine(env: Env, execution_id: str, pod: str | None) -> Counter[tuple[str, str]]:
    names = {object_name(execution_id)} | ({pod} if pod else set())
    return Counter((c.resource, c.verb) for c in env.calls if c.name in names)


def _in_background(
    backend: KubernetesBackend, execution_id: str, request: ExecutionRequest
) -> Callable[[], object]:
    """Run in a thread; the returned function joins it and gives its report (or its exception)."""
    out: list[object] = []

    def target() -> None:
        try:
            out.append(backend.run(execution_id, request))
        except InfrastructureFault as fault:
            out.append(fault)

    thread = threading.Thread(target=target)
    thread.start()

    def join() -> object:
        thread.join(120)
        backend.close()
        assert len(out) == 1, "exactly one result"
        return out[0]

    return join


def _wait_attached(env: Env, started: float = 1.0) -> str:
    """The pod whose runner got a job: wait for the attach, then ``started`` seconds for the code to run."""
    assert env.warm is not None
    kubelet = env.warm.kubelet
    end = time.monotonic() + 60
    while not (busy := [c for c in list(kubelet.containers.values()) if c.sessions]):
        assert time.monotonic() < end, "no attach"
        time.sleep(0.02)
    time.sleep(started)
    return busy[0].pod


# ---------------------------------------------------------------------------- the happy path


@pytest.mark.timeout(180)
def test_executions_run_in_claimed_pool_sandboxes_with_two_writes_each_and_o1_watches(env: Env) -> None:
    backend = env.backend(concurrency=4)
    ids = [f"warm-{i}" for i in range(6)]
    code = "import sys\nprint({i} * 2)\nprint('note {i}', file=sys.stderr)\nsys.exit({i} % 2)"
    try:
        with ThreadPoolExecutor(3) as pool:
            reports = list(pool.map(
                lambda i: backend.run(i, ExecutionRequest(code=code.format(i=int(i[5:])))), ids))
    finally:
        backend.close()
    assert [(r.status, r.exit_code) for r in reports] == [
        (Status.SUCCEEDED if i % 2 == 0 else Status.FAILED, i % 2) for i in range(6)]
    assert [(r.stdout, r.stderr) for r in reports] == [(f"{i * 2}\n", f"note {i}\n") for i in range(6)]
    pods = [r.sandbox_name for r in reports]
    assert len(set(pods)) == 6 and all(p and p.startswith("sandq-warm-") for p in pods), pods
    for execution_id, pod in zip(ids, pods, strict=True):
        verbs = _mine(env, execution_id, pod)
        assert verbs == Counter({("sandboxclaims", "create"): 1, ("pods/attach", "get"): 1,
                                 ("pods/attach", "create"): 1, ("sandboxclaims", "delete"): 1}), verbs
        stored = [n for (resource, verb), n in verbs.items() if verb in WRITES and resource != "pods/attach"]
        assert sum(stored) == 2
    unnamed = Counter((c.resource, c.verb) for c in env.calls if c.name is None)
    assert unnamed == Counter({(kind, verb): 1 for kind in ("jobs", "pods", "sandboxclaims")
                               for verb in ("list", "watch")}), unnamed
    assert not any(c.resource == "jobs" and c.verb == "create" for c in env.calls)


@pytest.mark.timeout(120)
def test_other_shapes_and_job_placement_run_as_jobs(env: Env) -> None:
    backend = env.backend()
    try:
        bigger = backend.run("big", ExecutionRequest(code="print('big')", mem_limit="1Gi"))
        placed = backend.run("placed", ExecutionRequest(code="print('job')", placement="job"))
    finally:
        backend.close()
    assert (bigger.stdout, placed.stdout) == ("big\n", "job\n")
    assert {c.name for c in env.calls if c.resource == "jobs" and c.verb == "create"} == {
        object_name("big"), object_name("placed")}
    assert not [c for c in env.calls if c.resource == "sandboxclaims" and c.verb == "create"]


@pytest.mark.timeout(120)
def test_a_pod_whose_python_differs_compiles_the_runners_source(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = b"\x00\x00\r\n" + marshal.dumps(compile("raise SystemExit('not this one')", "x", "exec"))
    monkeypatch.setattr(protocol, "_runner_compiled", lambda: other)  # another interpreter's magic
    report = env.run("source", ExecutionRequest(code="print('compiled here')"))
    assert report.status is Status.SUCCEEDED and report.stdout == "compiled here\n"


@pytest.mark.timeout(120)
def test_warm_placement_on_a_job_mode_worker(env: Env) -> None:
    asked = ExecutionRequest(code="print('warm')", placement="warm")
    report = env.run("asked", asked, kubernetes_mode="job")
    assert report.stdout == "warm\n" and report.sandbox_name and report.sandbox_name.startswith("sandq-warm-")


@pytest.mark.timeout(120)
def test_an_empty_pool_means_a_cold_sandbox_within_the_claim_timeout(env: Env) -> None:
    assert env.warm is not None
    env.warm.scale(env.settings.namespace, env.settings.warm_pool, 0)
    report = env.run("cold", ExecutionRequest(code="print('cold')"))
    assert report.status is Status.SUCCEEDED and report.stdout == "cold\n"
    assert report.sandbox_name == object_name("cold"), "agent-sandbox names a cold sandbox after its claim"


@pytest.mark.timeout(120)
def test_limits_hold_as_on_the_job_path(env: Env) -> None:
    timed_out = env.run("slow", ExecutionRequest(code="print('begun', flush=True)\nwhile True: pass",
                                                   timeout_seconds=2))
    assert timed_out.status is Status.TIMED_OUT and timed_out.stdout == "begun\n"
    loud = env.run("loud", ExecutionRequest(code="print('x' * 4096 * 1024)", max_output_bytes=64 * 1024))
    assert loud.status is Status.OUTPUT_LIMIT_EXCEEDED and loud.stdout_truncated
    assert len(loud.stdout) == 64 * 1024
    files = env.run("files", ExecutionRequest(code=(
        "open('/tmp/outputs/a.txt', 'w').write('A')\nimport urllib.request\ntry:\n"
        "    urllib.request.urlopen('http://1.1.1.1', timeout=2)\nexcept OSError:\n    print('offline')")))
    assert files.stdout == "offline\n"
    assert [(f.name, f.content) for f in files.output_files] == [("a.txt", b"A")]


@pytest.mark.timeout(120)
def test_cancel_stops_a_running_execution(env: Env) -> None:
    backend = env.backend()
    join = _in_background(backend, "cancelled", ExecutionRequest(code="import time\ntime.sleep(60)"))
    _wait_attached(env, started=0.5)
    assert backend.cancel("cancelled")
    report = join()
    assert isinstance(report, SandboxReport) and report.status is Status.CANCELLED


# ---------------------------------------------------------------------------- faults


@pytest.mark.timeout(120)
def test_claim_timeout_is_a_retried_fault_and_leaves_nothing() -> None:
    with kubernetes_env(warm_pool=0, **{**WARM, "warm_claim_timeout_seconds": 2}) as env:
        assert env.warm is not None
        env.warm.kubelet.node_labels.clear()  # a cold sandbox can never be scheduled
        with pytest.raises(InfrastructureFault, match="no sandbox within 2 s"):
            env.run("no-room", ExecutionRequest(code="print(1)"))
        assert env.warm.kubelet.started == 0
        assert _mine(env, "no-room", None) == Counter({("sandboxclaims", "create"): 1,
                                                        ("sandboxclaims", "delete"): 1})


@pytest.mark.timeout(120)
def test_a_missing_template_is_an_error_not_retried(env: Env) -> None:
    report = env.run("no-template", ExecutionRequest(code="print(1)"), sandbox_template="nowhere")
    assert report.status is Status.INFRASTRUCTURE_ERROR
    assert "TemplateNotFound" in (report.error or "")


@pytest.mark.timeout(120)
def test_a_claimed_pod_evicted_mid_run_is_an_error_never_run_again(env: Env) -> None:
    assert env.warm is not None
    backend = env.backend()
    join = _in_background(backend, "evicted", ExecutionRequest(code="import time\ntime.sleep(30)"))
    pod = _wait_attached(env)
    env.warm.evict(env.settings.namespace, pod)
    report = join()
    assert isinstance(report, SandboxReport) and report.status is Status.INFRASTRUCTURE_ERROR, report
    assert "not run again" in (report.error or "")
    assert [c.name for c in env.calls if c.resource == "pods/attach" and c.verb == "get"] == [pod]


@pytest.mark.timeout(120)
def test_delivery_cut_mid_run_is_recovered_from_the_pods_log(env: Env) -> None:
    assert env.warm is not None
    backend = env.backend()
    code = "import sys, time\nprint('before', flush=True)\ntime.sleep(2)\nprint('after')\n"
    code += "print('e', file=sys.stderr)"
    join = _in_background(backend, "cut", ExecutionRequest(code=code))
    pod = _wait_attached(env, started=0.5)
    assert env.warm.kubelet.cut_attaches() == 1
    report = join()
    assert isinstance(report, SandboxReport), report
    assert (report.status, report.stdout, report.stderr) == (Status.SUCCEEDED, "before\nafter\n", "e\n")
    assert _mine(env, "cut", pod)[("pods/log", "get")] == 1
    assert env.warm.kubelet.started == 3, "one pool sandbox taken, one made again: the code ran once"


@pytest.mark.timeout(120)
def test_an_attach_refused_before_delivery_is_a_retried_fault(env: Env) -> None:
    env.running.api.faults.append(FaultRule("get", "pods/attach", status=500))
    with pytest.raises(InfrastructureFault, match="could not hand the job"):
        env.run("refused", ExecutionRequest(code="print(1)"))
    report = env.run("refused", ExecutionRequest(code="print('second try')"))  # the task's retry
    assert report.stdout == "second try\n"


@pytest.mark.timeout(120)
def test_api_errors_on_the_claim_are_retried_and_a_lost_create_is_adopted(env: Env) -> None:
    env.running.api.faults.append(FaultRule("create", "sandboxclaims", status=503))
    env.running.api.faults.append(FaultRule("create", "sandboxclaims", kind="lost"))
    report = env.run("flaky", ExecutionRequest(code="print('once')"))
    assert report.status is Status.SUCCEEDED and report.stdout == "once\n"
    verbs = _mine(env, "flaky", report.sandbox_name)
    assert verbs[("sandboxclaims", "create")] == 3 and verbs[("sandboxclaims", "get")] == 1, verbs
    assert verbs[("pods/attach", "get")] == 1


@pytest.mark.timeout(120)
def test_a_redelivered_execution_adopts_the_claim_a_crashed_worker_left(env: Env) -> None:
    request = ExecutionRequest(code="print('once')")
    api = KubeApi(env.settings)
    try:  # worker A created the claim, then crashed before it attached
        body = claim_manifest(request, env.settings, "again", now())
        create_or_adopt(api, "SandboxClaim", _claims_api(api, "create"), _claims_api(api, "get"), body,
                        EXECUTION_ID_ANNOTATION)
    finally:
        api.close()
    report = env.run("again", request)
    assert report.status is Status.SUCCEEDED and report.stdout == "once\n"
    assert _mine(env, "again", report.sandbox_name)[("sandboxclaims", "get")] == 1


@pytest.mark.timeout(120)
def test_a_claim_left_by_a_dead_worker_expires_with_its_sandbox(env: Env) -> None:
    """The claim's lifecycle is the backstop: past its shutdownTime agent-sandbox deletes it."""
    settings = env.settings.model_copy(update={"janitor_grace_seconds": 0, "warm_claim_timeout_seconds": 1})
    request = ExecutionRequest(code="print(1)", timeout_seconds=1)
    api = KubeApi(settings)
    try:
        body = claim_manifest(request, settings, "orphan", now() - timedelta(seconds=34))
        create_or_adopt(api, "SandboxClaim", _claims_api(api, "create"), _claims_api(api, "get"), body,
                        EXECUTION_ID_ANNOTATION)
    finally:
        api.close()
    assert env.wait_clean(20, keep_pool=True) == []
