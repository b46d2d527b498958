"""A Job controller for the stand-in, as Kubernetes 1.31+ runs one, over a node whose kubelet
runs every pod in runsc (``node``).

Each created Job gets pods carrying the ``batch.kubernetes.io/job-tracking`` finalizer, which
the controller removes once it has counted a pod's end. Its ``podFailurePolicy`` as sandq sets
it: a pod with ``DisruptionTarget`` (an eviction) is ignored and replaced after
``eviction_backoff`` (10 s, the controller's pod-failure backoff); any other failed pod fails
the Job (``FailJob``: ``FailureTarget``, then ``Failed``) or its index (``FailIndex``). At
``activeDeadlineSeconds`` from the Job's start the controller sets ``FailureTarget``
(``DeadlineExceeded``), deletes the Job's pods (they keep their finalizer and get a
``deletionTimestamp``; the kubelet stops them, ``Error``/137, no pod reason), and sets
``Failed`` only once every pod has ended. A deleted Job's pods are deleted by the garbage
collector the same way, and their finalizers removed.

``deny_pods`` makes the pod creations of the Jobs it names fail (``quota``: 403 exceeded quota;
``webhook``: an admission webhook's denial; ``runtimeclass``: the RuntimeClass admission plugin's
403 for a missing RuntimeClass); the controller retries every ``pod_create_retry``
seconds, and the Job runs without pods into its deadline. Indexed Jobs (``completionMode:
Indexed``) get one pod per index, at most ``parallelism`` at once, each with
``JOB_COMPLETION_INDEX`` and the completion-index annotation and label.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.k8s_harness.cgroups import remove_tree
from tests.k8s_harness.node import HELD_OUTPUT, Node, PodRun, held_log
from tests.k8s_harness.standin import JOBS, PODS, RunningStandIn, _now

__all__ = ["FINALIZER", "HELD_OUTPUT", "Cluster", "held_log"]

FINALIZER = "batch.kubernetes.io/job-tracking"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
DENIALS = {
    "quota": 'pods "{pod}" is forbidden: exceeded quota: sandboxes, requested: pods=1, used: pods=64, '
             "limited: pods=64",
    "webhook": 'admission webhook "policy.example.com" denied the request: pods "{pod}" is not allowed',
    "runtimeclass": 'pods "{pod}" is forbidden: pod rejected: RuntimeClass "gvisor" not found',
}


@dataclass
class JobRun:
    """A Job the controller runs: its pods in progress, and whether (and why) it stops."""

    ns: str
    manifest: dict[str, Any]
    pods: dict[str, PodRun] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    why: str = ""
    """``deadline``, ``failed`` (FailJob) or ``deleted``."""

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.manifest["metadata"]["uid"])

    def stop(self, why: str) -> bool:
        """Stop making pods, for ``why``; False if it was stopping already."""
        if self.stopping.is_set():
            return False
        self.why = why
        self.stopping.set()
        return True


class Cluster:
    """Job controller + node, attached to a running stand-in. Its attributes are the knobs."""

    def __init__(self, running: RunningStandIn, workdir: Path, runsc: str = "runsc") -> None:
        self.running = running
        self.api = running.api
        self.workdir = workdir
        self.runsc = runsc
        self.executor = ThreadPoolExecutor(max_workers=24, thread_name_prefix="kubelet")
        # the control plane
        self.eviction_backoff = 10.0
        self.deny_pods: dict[str, str] = {}
        """Pod creation refused, by Job name: ``quota``, ``webhook`` or ``runtimeclass``."""
        self.pod_create_retry = 1.0
        self.schedule_delay = 0.0
        """Seconds a pod stays Pending, with no condition, before it is scheduled (inf: never)."""
        self.node_labels: dict[str, str] = {"sandbox.gke.io/runtime": "gvisor"}
        # the node
        self.start_latency = 0.0
        self.mount_backoff = 0.5
        self.mount_backoff_max = 122.0
        """The kubelet retries a missing ConfigMap after 0.5 s, doubling up to 2 min 2 s."""
        self.image_backoff = 10.0
        self.bad_images: set[str] = set()
        self.flaky_images: dict[str, int] = {}
        self.evict = 0
        """Evict the next N running pods through the API (DisruptionTarget), 0.3 s in."""
        self.lose: set[str] = set()
        """The runtime loses the containers of these Jobs' pods, 0.3 s in."""
        self.oom_report = "OOMKilled"
        self.oom_reports: dict[str, str] = {}
        """How an OOM kill is reported, by Job name: ``OOMKilled``, ``Error128`` or ``Error``."""
        self.housekeeping_seconds = 10.0
        self.log_rotate_bytes = 10 * 1024 * 1024
        self.log_check_seconds = 10.0
        self.hold = False
        # what happened
        self.pods_created = 0
        self.pods_started = 0
        self.held = 0
        self.pod_create_errors: list[str] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.jobs: dict[str, JobRun] = {}
        self.pods: dict[tuple[str, str], PodRun] = {}
        self._released: asyncio.Event | None = None
        self.node = Node(self)
        self.api.hooks.append(self._on_api_write)
        self.api.deleting.append(self._on_deleting)

    # -- held pods ---------------------------------------------------------------------------

    def released(self) -> asyncio.Event:
        """The event that ends the pods held now (made on first use, on the loop)."""
        if self._released is None:
            self._released = asyncio.Event()
        return self._released

    def release(self) -> None:
        """End every held pod (successfully); later pods are held again only if ``hold`` stays True."""
        def _set() -> None:
            if self._released is not None:
                self._released.set()
            self._released = None
        self.running.loop.call_soon_threadsafe(_set)

    # -- events from the API -------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_api_write(self, verb: str, resource: str, ns: str, obj: dict[str, Any]) -> None:
        if resource != "jobs" or not obj:
            return
        uid = obj["metadata"]["uid"]
        if verb == "create":
            run = self.jobs[uid] = JobRun(ns, obj)
            self._spawn(self._control(run))
        elif verb == "delete" and uid in self.jobs:
            self.jobs[uid].stop("deleted")

    def _on_deleting(self, res: Any, ns: str, name: str) -> None:
        pod = self.pods.get((ns, name)) if res == PODS else None
        if pod is not None:
            pod.deleting.set()

    def close(self) -> None:
        """Stop every controller and kubelet task (each removes its sandbox and cgroup), then sweep."""
        async def cancel() -> None:
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=20)

        with contextlib.suppress(Exception):
            self.running.run(cancel(), timeout=30)
        self.node.sweep()  # nothing may outlive the cluster
        remove_tree(self.node.cgroup_root)
        self.executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the Job controller --------------------------------------------------------------------

    async def _control(self, run: JobRun) -> None:
        spec = run.manifest["spec"]
        await self.api.patch(JOBS, run.ns, run.name, {"status": {"startTime": _now(), "active": 1}})
        deadline = spec.get("activeDeadlineSeconds")
        timer = asyncio.get_running_loop().create_task(self._deadline(run, deadline)) if deadline else None
        indexed = spec.get("completionMode") == "Indexed"
        gate = asyncio.Semaphore(spec.get("parallelism") or 1)
        done: dict[str, set[int]] = {"succeeded": set(), "failed": set()}
        indexes: list[int | None] = list(range(spec["completions"])) if indexed else [None]
        try:
            outcomes = await asyncio.gather(*(self._index(run, i, gate, done) for i in indexes))
        finally:
            if timer is not None:
                timer.cancel()
        if run.why == "deleted":
            return
        if run.why == "deadline":
            await self._condition(run, "Failed", "DeadlineExceeded")
        elif "failed" in outcomes:
            reason = "FailedIndexes" if indexed else "PodFailurePolicy"
            if run.stop("failed"):
                await self._condition(run, "FailureTarget", reason)
            await self._condition(run, "Failed", reason)
        else:
            await self._condition(run, "SuccessCriteriaMet", "CompletionsReached")
            await self._condition(run, "Complete", "CompletionsReached")
        await self.api.patch(JOBS, run.ns, run.name, {"status": {
            "active": 0, "succeeded": outcomes.count("succeeded"), "failed": outcomes.count("failed"),
            **({"completionTime": _now()} if "failed" not in outcomes and not run.why else {})}})

    async def _deadline(self, run: JobRun, seconds: float) -> None:
        """At the deadline: FailureTarget, then every pod of the Job deleted (Failed comes at the end)."""
        await asyncio.sleep(seconds)
        if run.stop("deadline"):
            await self._condition(run, "FailureTarget", "DeadlineExceeded")
            for pod in list(run.pods.values()):
                await self.api.delete(PODS, run.ns, pod.name)

    async def _index(self, run: JobRun, index: int | None, gate: asyncio.Semaphore,
                     done: dict[str, set[int]]) -> str:
        """Run one index (or the one pod of a Job) to its end: replace evicted pods, count the end."""
        async with gate:
            while not run.stopping.is_set():
                pod = await self._create_pod(run, index)
                if pod is None:
                    break
                outcome = await pod.outcome
                run.pods.pop(pod.name, None)
                await self.api.finalize(PODS, run.ns, pod.name, FINALIZER)
                if outcome == "disrupted":  # podFailurePolicy: DisruptionTarget -> Ignore, a new pod later
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(run.stopping.wait(), self.eviction_backoff)
                    continue
                if run.stopping.is_set() and run.why != "failed":
                    break  # stopped by the deadline or deleted with its Job: not counted
                if index is not None:  # FailIndex: the other indexes go on
                    done[outcome].add(index)
                    await self.api.patch(JOBS, run.ns, run.name, {"status": {
                        "completedIndexes": _ranges(done["succeeded"]),
                        "failedIndexes": _ranges(done["failed"])}})
                elif outcome == "failed" and run.stop("failed"):  # FailJob
                    await self._condition(run, "FailureTarget", "PodFailurePolicy")
                return outcome
        return "stopped"

    async def _create_pod(self, run: JobRun, index: int | None) -> PodRun | None:
        """Create the next pod of ``index`` (retrying while creation is denied); None once stopping."""
        while True:
            if run.stopping.is_set():
                return None
            name = f"{run.name[:48]}-{index}-{secrets.token_hex(3)[:5]}" if index is not None else \
                f"{run.name[:56]}-{secrets.token_hex(3)[:5]}"
            denial = self.deny_pods.get(run.name)
            if denial is None:
                break
            self.pod_create_errors.append(DENIALS[denial].format(pod=name))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.stopping.wait(), self.pod_create_retry)
        template = run.manifest["spec"]["template"]
        labels = {**template.get("metadata", {}).get("labels", {}),
                  "batch.kubernetes.io/job-name": run.name, "job-name": run.name,
                  "batch.kubernetes.io/controller-uid": run.uid, "controller-uid": run.uid}
        annotations = dict(template.get("metadata", {}).get("annotations") or {})
        spec = json.loads(json.dumps(template["spec"]))
        if index is not None:  # what the Job controller adds to the pods of an Indexed Job
            labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
            for each in spec["containers"]:
                each.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
        await self.api.put(PODS, run.ns, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "labels": labels, "annotations": annotations, "finalizers": [FINALIZER],
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": run.name,
                                     "uid": run.uid, "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec,
            "status": {"phase": "Pending", "conditions": []},
        })
        self.pods_created += 1
        pod = run.pods[name] = self.pods[(run.ns, name)] = PodRun(run.ns, name, run.name, spec)
        self._spawn(self.node.run(pod))
        if run.stopping.is_set():  # stopped while it was being made: it goes at once
            await self.api.delete(PODS, run.ns, name)
        return pod

    async def _condition(self, run: JobRun, kind: str, reason: str) -> None:
        job = self.api.get(JOBS, run.ns, run.name)
        if job is None:
            return
        kept = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("type") != kind]
        cond = {"type": kind, "status": "True", "reason": reason, "message": reason,
                "lastProbeTime": _now(), "lastTransitionTime": _now()}
        await self.api.patch(JOBS, run.ns, run.name, {"status": {"conditions": [*kept, cond]}})


def _ranges(indexes: set[int]) -> str:
    """Indexes as the Job status lists them: ``"0-2,5"``."""
    parts: list[str] = []
    for index in sorted(indexes):
        if parts and parts[-1].split("-")[-1] == str(index - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{index}"
        else:
            parts.append(str(index))
    return ",".join(parts)
