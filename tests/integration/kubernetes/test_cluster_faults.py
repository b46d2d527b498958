"""What a real cluster (Kubernetes 1.31+, GKE Sandbox) does to an execution, one test per item of
issue 13, against the stand-in started as a cluster starts pods: 3 s from a pod's scheduling to
its code (image, sandbox boot), after the kubelet's ConfigMap-mount backoff (0.5 s, doubling).

Each test says which status it expects and why, by the README's table of statuses: ``timed_out``
only for code still running at its timeout, ``oom_killed`` only when memory was exceeded (and the
cluster says so), and an ``InfrastructureFault`` (retried by the worker) only when no code ran;
once the code may have run, it is never run again.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sandq.client.client import Client
from sandq.contract import ExecutionRequest, File, Status
from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes.manifests import job_manifest, object_name
from tests.conformance.corpus import load_cases, mismatches
from tests.k8s_harness.cluster import FINALIZER
from tests.k8s_harness.env import Env, kubernetes_env
from tests.k8s_harness.standin import JOBS, PODS, FaultRule

START_LATENCY = 3.0
"""From a pod's scheduling to its container running: the image and the sandbox's boot."""


@pytest.fixture
def env() -> Iterator[Env]:
    with kubernetes_env() as environment:
        environment.cluster.start_latency = START_LATENCY
        yield environment


def _run_all(env: Env, runs: dict[str, tuple[ExecutionRequest, dict[str, Any]]]) -> dict[str, Any]:
    """Run each (request, settings) at once, each on its own backend; a report or the fault raised."""
    def one(item: tuple[str, tuple[ExecutionRequest, dict[str, Any]]]) -> Any:
        execution_id, (request, settings) = item
        try:
            return env.run(execution_id, request, **settings)
        except InfrastructureFault as fault:
            return fault

    with ThreadPoolExecutor(len(runs)) as pool:
        return dict(zip(runs, pool.map(one, runs.items()), strict=True))


def _pods_of(env: Env, execution_id: str) -> list[str]:
    job = object_name(execution_id)
    return [name for name in env.running.api.names(PODS) if name.startswith(job + "-")]


def _conditions(version: dict[str, Any]) -> list[str]:
    return [c["type"] for c in (version.get("status") or {}).get("conditions") or []]


# ------------------------------------------------------------------ 1. a Job's deadline on 1.31+


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_job_deadline_sequence_is_timed_out_not_oom_killed(env: Env) -> None:
    """A Job's deadline on 1.31+: ``FailureTarget`` (DeadlineExceeded), the pod deleted under its
    finalizer and ending ``Error``/137 with no pod reason, ``Failed`` only after the pod ended.

    Expected: timed_out, exit 137 (README: still running at its timeout, killed): the code had
    its whole timeout and ran on. Not oom_killed: no OOMKilled, no memory exceeded. Here the pod
    is scheduled late (``schedule_delay``: a node scale-up), so the Job's deadline comes before
    the pod's, and the code stops its own runner so that only the cluster can end it.
    """
    settings = {"kill_grace_seconds": 1, "start_timeout_seconds": 4, "unschedulable_timeout_seconds": 5,
                "eviction_backoff_seconds": 0}
    stops_its_runner = "import os, signal, time\nprint('running', flush=True)\n" \
                       "os.kill(os.getppid(), signal.SIGSTOP)\ntime.sleep(60)\n"
    request = ExecutionRequest(code=stops_its_runner, timeout_seconds=1)
    job = job_manifest(request, env.settings.model_copy(update=settings), "deadline")["spec"]
    assert (job["template"]["spec"]["activeDeadlineSeconds"], job["activeDeadlineSeconds"]) == (6, 17)
    env.cluster.schedule_delay = 12  # admitted at 12 s, code at ~15 s; deadlines: the Job 17 s, the pod 18 s
    report = env.run("deadline", request, **settings)
    assert report.status is Status.TIMED_OUT and report.exit_code == 137, report
    assert "deadline" in (report.error or "")

    ns, (pod,) = env.settings.namespace, _pods_of(env, "deadline")
    jobs = env.running.api.versions(JOBS, ns, object_name("deadline"))
    first_target = next(i for i, v in enumerate(jobs) if "FailureTarget" in _conditions(v))
    assert "Failed" not in _conditions(jobs[first_target])  # FailureTarget first ...
    pods = env.running.api.versions(PODS, ns, pod)
    deleted = [v for v in pods if v["metadata"].get("deletionTimestamp")]
    assert deleted and all(v["metadata"].get("finalizers") == [FINALIZER] for v in deleted[:-1])
    ended = deleted[-2]["status"]  # the last state under the finalizer: Failed, Error/137, no reason
    assert ended["phase"] == "Failed" and "reason" not in ended
    assert ended["containerStatuses"][0]["state"]["terminated"]["reason"] == "Error"
    assert ended["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137


# ------------------------------------------------------------------ 2. the deadline covers more than the code


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_start_up_and_a_replaced_pod_do_not_eat_the_code_s_time(env: Env) -> None:
    """The code needs 1.5 s of its 2 s; its pod takes 3 s to start and is evicted once (the Job
    makes a new pod after its 10 s backoff, which starts in 3 s again).

    Expected: succeeded, with its output (README: the code exited 0). The Job's old deadline
    (timeout + 2 s from the Job's start) would have ended it as timed_out; the runner counts the
    timeout from the code's start, the pod's deadline adds the start-up, the Job's one more pod.
    """
    env.cluster.evict = 1
    request = ExecutionRequest(code="import time\ntime.sleep(1.5)\nprint('in time')\n", timeout_seconds=2)
    start = time.monotonic()
    report = env.run("slow-start", request)
    took = time.monotonic() - start
    assert report.status is Status.SUCCEEDED and report.stdout == "in time\n", report
    assert env.cluster.pods_created == 2 and env.cluster.pods_started == 2
    assert took >= env.cluster.eviction_backoff + 2 * START_LATENCY
    spec = job_manifest(request, env.settings, "slow-start")["spec"]
    old_deadline = request.timeout_seconds + math.ceil(env.settings.kill_grace_seconds)
    assert spec["activeDeadlineSeconds"] > took > old_deadline


# ------------------------------------------------------------------ 3. no code ran: retried


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_pods_refused_at_creation_are_a_retried_fault(env: Env) -> None:
    """A ResourceQuota (403 exceeded quota), an admission webhook, or the RuntimeClass admission
    (a missing RuntimeClass) refuses every pod of a Job.

    Expected: InfrastructureFault (the worker retries it; README's infrastructure_error after the
    retries): no code ran. Once the cluster admits pods again, the retry runs the code once.
    """
    denials = {"quota": "exceeded quota", "webhook": "denied the request", "runtimeclass": "RuntimeClass"}
    env.cluster.deny_pods = {object_name(name): name for name in denials}
    request = ExecutionRequest(code="print('ran')")
    quick = {"unschedulable_timeout_seconds": 1, "eviction_backoff_seconds": 0}
    results = _run_all(env, {name: (request, quick) for name in denials})
    for name, why in denials.items():
        assert isinstance(results[name], InfrastructureFault), results[name]
        assert str(results[name]).startswith("no code ran: no sandbox pod")
        assert any(why in error for error in env.cluster.pod_create_errors)
    assert env.cluster.pods_created == 0
    env.cluster.deny_pods.clear()
    retried = _run_all(env, {name: (request, {}) for name in denials})  # the worker's retries
    assert all(r.status is Status.SUCCEEDED and r.stdout == "ran\n" for r in retried.values()), retried
    assert env.cluster.pods_started == len(denials)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_pod_pending_until_the_deadline_is_a_retried_fault(env: Env) -> None:
    """The pod stays Pending (no node yet, no condition) until the Job's deadline deletes it:
    ``FailureTarget``, the pod garbage collector fails it (DisruptionTarget), then ``Failed``.

    Expected: InfrastructureFault, retried: no code ran (it used to be timed_out/124).
    """
    env.cluster.schedule_delay = math.inf
    with pytest.raises(InfrastructureFault, match="no code ran"):
        env.run("pending", ExecutionRequest(code="print(1)", timeout_seconds=1), kill_grace_seconds=0.5,
             start_timeout_seconds=1, unschedulable_timeout_seconds=5, eviction_backoff_seconds=0)
    assert env.cluster.pods_started == 0
    jobs = env.running.api.versions(JOBS, env.settings.namespace, object_name("pending"))
    ending = [c for c in _conditions(jobs[-1]) if c in ("FailureTarget", "Failed")]
    assert ending == ["FailureTarget", "Failed"]


# ------------------------------------------------------------------ 4. the OOM report matrix


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_oom_reports_and_kills_that_are_not_oom(env: Env) -> None:
    """Each way GKE's gVisor reports a memory kill, and two SIGKILLs that are not one.

    Expected: oom_killed for ``OOMKilled``/137 and ``Error``/128 (README: exceeded mem_limit);
    failed/137 for a plain ``Error``/137 (no evidence of memory, so never oom_killed; its error
    names both causes) and for a program that SIGKILLs its runner; a final infrastructure_error,
    not retried, when the runtime loses a container whose code had started.
    """
    bomb = ExecutionRequest(code="b = []\nwhile True:\n    b.append(bytearray(16 << 20))\n",
                            mem_limit="128Mi", mem_requested="128Mi", timeout_seconds=60)
    reported = {"oom-killed": "OOMKilled", "oom-128": "Error128", "oom-plain": "Error"}
    for execution_id, report in reported.items():
        env.cluster.oom_reports[object_name(execution_id)] = report
    env.cluster.lose.add(object_name("lost"))
    runs = {name: (bomb, {}) for name in ("oom-killed", "oom-128", "oom-plain")}
    kill_runner = "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(5)\n"
    runs["kill-runner"] = (ExecutionRequest(code=kill_runner, timeout_seconds=30), {})
    runs["lost"] = (ExecutionRequest(code="import time\ntime.sleep(5)\n", timeout_seconds=30), {})
    results = _run_all(env, runs)
    outcome = {name: (r.status, r.exit_code) for name, r in results.items()}
    assert outcome == {
        "oom-killed": (Status.OOM_KILLED, 137), "oom-128": (Status.OOM_KILLED, 137),
        "oom-plain": (Status.FAILED, 137), "kill-runner": (Status.FAILED, 137),
        "lost": (Status.INFRASTRUCTURE_ERROR, None)}, results
    assert "mem_limit" in (results["oom-plain"].error or "")
    assert "ContainerStatusUnknown" in (results["lost"].error or "")
    assert env.cluster.pods_created == 5  # nothing ran twice


# ------------------------------------------------------------------ 5. the kubelet's storage eviction


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_storage_eviction_without_disruption_target_is_failed(env: Env) -> None:
    """/tmp on the node's disk (``tmp_medium: ""``): 100 MB written where 64Mi are allowed; the
    eviction manager evicts the pod (reason Evicted, exit 137, no DisruptionTarget, so the Job
    fails rather than replacing it).

    Expected: failed, exit 137, the kubelet's message as the error: the program's own doing, past a
    limit it could know (README: failed); never oom_killed, no memory was exceeded; never retried.
    With the default memory-backed /tmp the same program gets ENOSPC, exactly as a local sandbox:
    failed, exit 1.
    """
    env.cluster.housekeeping_seconds = 0.5
    code = "import time\nwith open('/tmp/big', 'wb') as f:\n    f.write(b'x' * (100 << 20))\ntime.sleep(10)\n"
    fill = ExecutionRequest(code=code, timeout_seconds=30)
    results = _run_all(env, {"disk-tmp": (fill, {"tmp_medium": ""}), "memory-tmp": (fill, {})})
    evicted, full = results["disk-tmp"], results["memory-tmp"]
    assert (evicted.status, evicted.exit_code) == (Status.FAILED, 137), evicted
    assert 'EmptyDir volume "tmp" exceeds the limit "64Mi"' in (evicted.error or "")
    assert (full.status, full.exit_code) == (Status.FAILED, 1) and "No space left" in full.stderr, full
    assert env.cluster.pods_created == 2


# ------------------------------------------------------------------ 6. logs rotate; log reads fail


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_log_rotation_and_lost_log_reads_never_rerun_the_code(env: Env) -> None:
    """The kubelet rotates the log at 1 MiB (checked at once here), and ``GET pods/log`` reads only
    the current file. The program prints 200 KiB and leaves a 700 KiB and a small output file.

    Expected: succeeded, stdout whole, the big file left out and flagged (README: succeeded; the
    report cannot carry more than the log holds). Told a 16 MiB rotation size instead, sandq's
    report outgrows the log and is rotated away: a final infrastructure_error. And when the node
    is gone (every log read answers 503, past the retries of the read alone): a final
    infrastructure_error too. Neither is an InfrastructureFault the worker would retry: the code
    ran, and it is never run again (one pod each).
    """
    env.cluster.log_rotate_bytes, env.cluster.log_check_seconds = 1 << 20, 0
    lost = object_name("log-lost")
    env.running.api.faults.append(FaultRule("get", "pods/log", status=503, times=1000,
                                            name=lambda name: (name or "").startswith(lost + "-")))
    request = ExecutionRequest(code="print('o' * (200 << 10))\n"
                                    "open('/tmp/outputs/big.bin', 'wb').write(b'b' * (700 << 10))\n"
                                    "open('/tmp/outputs/small.txt', 'w').write('small')\n")
    results = _run_all(env, {"fits": (request, {"container_log_max_bytes": 1 << 20}),
                             "rotated": (request, {"container_log_max_bytes": 16 << 20}),
                             "log-lost": (request, {"container_log_max_bytes": 1 << 20, "api_retries": 2})})
    fits, rotated, gone = results["fits"], results["rotated"], results["log-lost"]
    assert fits.status is Status.SUCCEEDED and fits.stdout == "o" * (200 << 10) + "\n", fits.error
    assert [f.name for f in fits.output_files] == ["small.txt"] and fits.output_files_truncated
    assert rotated.status is Status.INFRASTRUCTURE_ERROR and "not in the pod's log" in (rotated.error or "")
    assert gone.status is Status.INFRASTRUCTURE_ERROR and "not run again" in (gone.error or "")
    assert sum(1 for c in env.calls if c.resource == "pods/log" and (c.name or "").startswith(lost)) == 3
    assert [len(_pods_of(env, name)) for name in results] == [1, 1, 1] and env.cluster.pods_started == 3


# ------------------------------------------------------------------ 7. the 1 MiB ConfigMap


@pytest.mark.timeout(60)
def test_a_request_over_one_configmap_is_rejected_at_submit(env: Env, client: Client) -> None:
    """512 KiB of code and 768 KiB of input files: with the runner, 1.33 MB for one ConfigMap.

    Expected: rejected at submit, naming input_files (README: invalid request, nothing ran). The
    check is needed: the API server answers 422 to such a ConfigMap (here a request that skipped
    validation), and the Job is deleted before any pod runs.
    """
    raw = {"code": "#" + "x" * (512 * 1024 - 1),
           "input_files": [{"name": "big.bin", "content": base64.b64encode(b"b" * (768 * 1024)).decode()}]}
    handle = client.submit(raw)
    assert handle.ready()
    result = handle.result(0)
    assert result.status is Status.REJECTED and (result.error or "").startswith("input_files:"), result.error
    big = File(name="big.bin", content=b"b" * (768 * 1024))
    unchecked = ExecutionRequest.model_construct(code=raw["code"], input_files=[big])
    report = env.run("too-big", unchecked)
    assert report.status is Status.INFRASTRUCTURE_ERROR and "HTTP 422" in (report.error or "")
    assert env.cluster.pods_started == 0
    assert any(c.resource == "jobs" and c.verb == "delete" for c in env.calls)


# ------------------------------------------------------------------ 8. watches


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_shared_watch_resumes_relists_and_filters(env: Env) -> None:
    """Watches end every second (timeoutSeconds), carry bookmarks, and are filtered by label on the
    server; then etcd compacts and every watch is cut, so resuming from the last resourceVersion
    answers 410 Gone.

    Expected: succeeded (README): the watch resumed from its resourceVersion without relisting or
    replaying objects, relisted once after the 410, and never received the foreign pod.
    """
    api = env.running.api
    api.bookmark_seconds = 0.3
    env.running.run(api.put(PODS, env.settings.namespace, {"metadata": {"name": "not-sandq", "labels": {}}}))
    backend = env.backend(watch_timeout_seconds=1)
    try:
        with ThreadPoolExecutor(1) as pool:
            request = ExecutionRequest(code="import time\ntime.sleep(3)\nprint('ok')")
            future = pool.submit(backend.run, "watched", request)
            while env.cluster.pods_started == 0:
                time.sleep(0.1)
            time.sleep(2)  # a few watches ended by their timeout, and resumed
            env.running.run(_compact_and_cut(env))
            report = future.result(60)
    finally:
        backend.close()
    assert report.status is Status.SUCCEEDED and report.stdout == "ok\n", report
    watches = [w for w in api.watch_log if w.resource == "pods"]
    assert sum(1 for w in watches if w.ended == "timeout") >= 2
    assert all(w.label_selector == "app.kubernetes.io/managed-by=sandq" for w in watches)
    assert all(w.since is not None for w in watches)  # each from the resourceVersion it had
    # Its one pod at most (under load the first list may see it instead): nothing replayed on resuming.
    assert sum(w.sent["ADDED"] for w in watches) <= 1
    assert any(w.ended == "gone" for w in watches) and sum(w.sent["BOOKMARK"] for w in watches) > 0
    assert all("not-sandq" not in w.names for w in api.watch_log)
    env.running.run(api.remove(PODS, env.settings.namespace, "not-sandq"))
    lists = [c for c in env.calls if c.verb == "list" and c.resource == "pods"]
    assert len(lists) == 2  # the first, and one after the 410


async def _compact_and_cut(env: Env) -> None:
    """A change sandq does not watch, compacted away with all before it; then every watch is cut.

    Without the change, a watch resuming at the latest revision (which bookmarks keep it at) would
    miss nothing and rightly get no 410. Nothing here yields to the loop, so no bookmark slips in.
    """
    api = env.running.api
    await api.patch(PODS, env.settings.namespace, "not-sandq", {"metadata": {"labels": {"changed": "yes"}}})
    api.compact()
    api.cut_watches()


# ------------------------------------------------------------------ 9. image pulls


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_image_pull_errors_are_retried_within_a_bound(env: Env) -> None:
    """A registry answers 429 to the first pull; another image does not exist.

    Expected: the first succeeded (README), after the kubelet's pull backoff; the second an
    InfrastructureFault once it has failed for ``image_pull_timeout_seconds``: no code ran, the
    worker retries it.
    """
    env.cluster.image_backoff = 1.0
    env.cluster.flaky_images["registry.example/flaky:1"] = 1
    env.cluster.bad_images.add("registry.example/nope:1")
    hello = ExecutionRequest(code="print('pulled')")
    results = _run_all(env, {
        "flaky": (hello, {"image": "registry.example/flaky:1", "image_pull_timeout_seconds": 10}),
        "missing": (hello, {"image": "registry.example/nope:1", "image_pull_timeout_seconds": 2})})
    assert results["flaky"].status is Status.SUCCEEDED and results["flaky"].stdout == "pulled\n"
    assert isinstance(results["missing"], InfrastructureFault), results["missing"]
    assert str(results["missing"]).startswith(("no code ran: ErrImagePull", "no code ran: ImagePullBackOff"))
    assert env.cluster.pods_started == 1


# ------------------------------------------------------------------ the corpus's timeouts, started slowly


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_corpus_timeouts_keep_their_partial_stdout_after_a_slow_start(env: Env) -> None:
    """The corpus's ``infinite_loop`` and ``sleep_past_deadline`` (2 s timeouts), with 3 s of start-up.

    Expected: timed_out with what they printed, as the corpus says: the runner counts the 2 s from
    the code's start, kills it and reports; the cluster's deadlines leave it the time.
    """
    cases = {c.name: c for c in load_cases() if c.name in ("infinite_loop", "sleep_past_deadline")}
    runs = {name: (ExecutionRequest.model_validate(case.request), {}) for name, case in cases.items()}
    results = _run_all(env, runs)
    for name, case in cases.items():
        assert mismatches(case, results[name]) == [], (name, results[name])
