"""API faults: retried infrastructure faults, lost answers, cut watches, and no leftovers.

What the cluster itself does to an execution is in ``test_cluster_faults``.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from sandq.contract import ExecutionRequest, SandboxReport, Status
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes.api import RateLimiter
from tests.k8s_harness.env import Env, make_settings
from tests.k8s_harness.standin import FaultRule

HELLO = ExecutionRequest(code="print('hello')")


def _run(env: Env, **overrides: object) -> SandboxReport:
    return env.run("f-1", HELLO, **overrides)


def _count(env: Env, resource: str, verb: str) -> int:
    return sum(1 for c in env.calls if c.resource == resource and c.verb == verb)


def _api_errors(verb: str, code: str) -> float:
    """``sandq_kubernetes_api_errors_total`` of this process (the backends here run in it)."""
    labels = {"verb": verb, "code": code}
    return REGISTRY.get_sample_value("sandq_kubernetes_api_errors_total", labels) or 0.0


@pytest.mark.timeout(60)
def test_429_honours_retry_after(env: Env) -> None:
    env.running.api.faults.append(FaultRule("create", "jobs", status=429, retry_after="1"))
    start = time.monotonic()
    report = _run(env)
    assert report.status == Status.SUCCEEDED and report.stdout == "hello\n"
    assert time.monotonic() - start >= 1.0
    assert _count(env, "jobs", "create") == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("status", "message"), [(500, "boom"), (503, "unavailable"), (403, "exceeded quota: q")]
)
def test_transient_errors_on_configmap_create_are_retried(env: Env, status: int, message: str) -> None:
    env.running.api.faults.append(FaultRule("create", "configmaps", status=status, message=message, times=2))
    before = _api_errors("create", str(status))
    report = _run(env)
    assert report.status == Status.SUCCEEDED
    assert _count(env, "configmaps", "create") == 3
    assert _api_errors("create", str(status)) == before + 2


@pytest.mark.timeout(60)
def test_lost_answer_to_job_create_attaches_instead_of_launching_twice(env: Env) -> None:
    env.running.api.faults.append(FaultRule("create", "jobs", kind="lost"))
    report = _run(env)
    assert report.status == Status.SUCCEEDED and report.stdout == "hello\n"
    assert env.cluster.pods_started == 1
    assert _count(env, "jobs", "get") == 1


@pytest.mark.timeout(60)
def test_connection_reset_on_log_read_is_retried(env: Env) -> None:
    env.running.api.faults.append(FaultRule("get", "pods/log", kind="abort"))
    env.running.api.faults.append(FaultRule("get", "pods/log", status=500))
    before = _api_errors("read", "unreachable"), _api_errors("read", "500")
    report = _run(env)
    assert report.status == Status.SUCCEEDED and report.stdout == "hello\n"
    assert _count(env, "pods/log", "get") == 3
    assert (_api_errors("read", "unreachable"), _api_errors("read", "500")) == (before[0] + 1, before[1] + 1)


@pytest.mark.timeout(60)
def test_api_unreachable_raises_infrastructure_fault_and_leaves_nothing(env: Env) -> None:
    env.running.api.faults.append(FaultRule("create", "jobs", kind="abort", times=100))
    before = _api_errors("create", "unreachable")
    with pytest.raises(InfrastructureFault, match="unreachable"):
        _run(env, api_retries=2)
    assert _count(env, "jobs", "create") == 3
    assert _api_errors("create", "unreachable") == before + 3
    assert env.cluster.pods_started == 0


@pytest.mark.timeout(60)
def test_no_api_server_at_all(env: Env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text((env.workdir / "kubeconfig").read_text().replace(env.running.url, "http://127.0.0.1:9"))
    settings = make_settings(kubeconfig, env.workdir, api_retries=1)
    from sandq.sandbox.kubernetes.backend import KubernetesBackend

    backend = KubernetesBackend(settings)
    try:
        with pytest.raises(InfrastructureFault, match="unreachable"):
            backend.run("nowhere", HELLO)
    finally:
        backend.close()


@pytest.mark.timeout(60)
def test_configmap_rejected_deletes_the_job(env: Env) -> None:
    env.running.api.faults.append(FaultRule("create", "configmaps", status=422, message="too large"))
    report = _run(env)
    assert report.status == Status.INFRASTRUCTURE_ERROR and "ConfigMap rejected" in (report.error or "")
    assert _count(env, "jobs", "delete") == 1


@pytest.mark.timeout(60)
def test_configmap_create_failing_persistently_deletes_the_job(env: Env) -> None:
    env.running.api.faults.append(FaultRule("create", "configmaps", status=500, times=100))
    with pytest.raises(InfrastructureFault):
        _run(env, api_retries=2)
    assert _count(env, "jobs", "delete") == 1


@pytest.mark.timeout(60)
def test_watch_dropped_and_410_gone_resume(env: Env) -> None:
    api = env.running.api
    api.faults += [FaultRule("watch", "jobs", kind="drop", times=2), FaultRule("watch", "pods", kind="gone")]
    report = _run(env)
    assert report.status == Status.SUCCEEDED and report.stdout == "hello\n"
    assert _count(env, "jobs", "watch") >= 3
    assert _count(env, "pods", "list") == 2  # 410 Gone -> relist


@pytest.mark.timeout(60)
def test_unschedulable_past_the_bound_is_a_retried_fault(env: Env) -> None:
    """Unschedulable for the bound: no code ran, so the worker retries it."""
    start = time.monotonic()
    with pytest.raises(InfrastructureFault, match="no code ran: Unschedulable"):
        _run(env, node_selector={"pool": "does-not-exist"}, unschedulable_timeout_seconds=1)
    assert 1 <= time.monotonic() - start < 10
    assert env.cluster.pods_started == 0


def test_rate_limiter_spaces_calls() -> None:
    limiter = RateLimiter(qps=20, burst=2)
    start = time.monotonic()
    waits = [limiter.acquire() for _ in range(6)]
    assert waits[:2] == [0.0, 0.0]
    assert time.monotonic() - start >= 4 / 20 * 0.9
