"""A Job controller and a kubelet for the stand-in: every pod really runs in runsc.

Each created Job gets a Pod; the pod waits in ContainerCreating until the
ConfigMaps it mounts exist, then its container command runs in a gVisor
sandbox with the ConfigMap files bind-mounted read-only where the pod mounts
them, the emptyDirs as size-limited tmpfs, the container's uid, memory and
cpu limits and read-only root. activeDeadlineSeconds is enforced from the
Job's start. Pod and Job status follow (Complete, Failed, OOMKilled,
DeadlineExceeded, DisruptionTarget), and the logs are served.

Faults: ``evict`` (the next N running pods are evicted; the Job's
podFailurePolicy ignores that and makes a new pod), ``bad_images`` (image
pull fails: ErrImagePull then ImagePullBackOff), ``node_labels`` (a pod whose
nodeSelector they do not satisfy stays Unschedulable).

Indexed Jobs (``completionMode: Indexed``) get one pod per index, at most
``parallelism`` at once, each with ``JOB_COMPLETION_INDEX`` and the
completion-index annotation and label; the Job completes when every index
has (``backoffLimitPerIndex: 0``: a failed index is not retried).

``hold = True`` starts no sandbox at all: pods stay Running until
``release()`` (or their deadline, or deletion), then succeed printing
``HELD_OUTPUT``, so hundreds of executions can be in flight at no cost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from sandq.contract import ExecutionRequest
from sandq.sandbox.gvisor.bundle import Shape, oci_config
from sandq.sandbox.runner import FRAME_BEGIN, FRAME_END
from sandq.settings import Settings
from tests.k8s_harness.standin import CONFIGMAPS, JOBS, PODS, RunningStandIn, _now

KILLED = 137
_PATH = "PATH=/usr/local/bin:/usr/bin:/bin"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
HELD_OUTPUT = "held\n"


def held_log() -> bytes:
    """The log of a held pod: the runner's frame of a success printing ``HELD_OUTPUT``."""
    doc = {"status": "succeeded", "exit_code": 0, "stdout": base64.b64encode(HELD_OUTPUT.encode()).decode(),
           "stderr": "", "output_files": []}
    return (FRAME_BEGIN + json.dumps(doc) + FRAME_END).encode()


class Cluster:
    """Job controller + kubelet + node, attached to a running stand-in."""

    def __init__(self, running: RunningStandIn, workdir: Path, runsc: str = "runsc") -> None:
        self.running = running
        self.api = running.api
        self.workdir = workdir
        self.runsc = runsc
        self.root = workdir / "runsc-root"
        self.bundles = workdir / "bundles"
        self.root.mkdir(parents=True, exist_ok=True)
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.executor = ThreadPoolExecutor(max_workers=24, thread_name_prefix="kubelet")
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.deleted: dict[str, asyncio.Event] = {}
        self.evict = 0
        self.bad_images: set[str] = set()
        self.node_labels: dict[str, str] = {"sandbox.gke.io/runtime": "gvisor"}
        self.pods_started = 0
        self.hold = False
        self.held = 0
        self._released: asyncio.Event | None = None
        self.api.hooks.append(self._on_api_write)

    def release(self) -> None:
        """End every held pod (successfully); later pods are held again only if ``hold`` stays True."""
        def _set() -> None:
            if self._released is not None:
                self._released.set()
            self._released = None
        self.running.loop.call_soon_threadsafe(_set)

    # -- events from the API ---------------------------------------------------------------

    def _on_api_write(self, verb: str, resource: str, ns: str, obj: dict[str, Any]) -> None:
        if resource != "jobs" or not obj:
            return
        uid = obj["metadata"]["uid"]
        if verb == "create":
            self.deleted[uid] = asyncio.Event()
            self.tasks[uid] = asyncio.get_running_loop().create_task(self._run_job(ns, obj))
        elif verb == "delete" and uid in self.deleted:
            self.deleted[uid].set()

    def close(self) -> None:
        for task in list(self.tasks.values()):
            self.running.loop.call_soon_threadsafe(task.cancel)
        listed = subprocess.run([self.runsc, "--root", str(self.root), "list", "-q"], capture_output=True,
                                check=False, text=True).stdout.split()
        for name in listed:  # nothing may outlive the cluster
            self._kill(name)
            self._delete(name)
        self.executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the Job controller --------------------------------------------------------------------

    async def _run_job(self, ns: str, job: dict[str, Any]) -> None:
        try:
            await self._control_job(ns, job)
        finally:
            self.tasks.pop(job["metadata"]["uid"], None)

    async def _control_job(self, ns: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        spec = job["spec"]
        start = time.monotonic()
        deadline = start + spec["activeDeadlineSeconds"] if spec.get("activeDeadlineSeconds") else None
        if spec.get("completionMode") == "Indexed":
            await self._control_indexed(ns, job, deadline)
            return
        await self.api.patch(JOBS, ns, name, {"status": {"startTime": _now(), "active": 1}})
        while True:
            outcome = await self._run_pod(ns, job, deadline)
            if outcome == "deleted":
                return
            if outcome != "evicted":  # podFailurePolicy: DisruptionTarget -> Ignore, make a new pod
                break
        if outcome == "succeeded":
            status = {"succeeded": 1, "active": 0, "completionTime": _now(), "conditions": [
                _cond("SuccessCriteriaMet", "CompletionsReached"), _cond("Complete", "CompletionsReached")]}
        elif outcome == "deadline":
            status = {"failed": 1, "active": 0, "conditions": [
                _cond("FailureTarget", "DeadlineExceeded"), _cond("Failed", "DeadlineExceeded")]}
        else:
            status = {"failed": 1, "active": 0, "conditions": [
                _cond("FailureTarget", "PodFailurePolicy"), _cond("Failed", "PodFailurePolicy")]}
        await self.api.patch(JOBS, ns, name, {"status": status})

    async def _control_indexed(self, ns: str, job: dict[str, Any], deadline: float | None) -> None:
        """One pod per index, ``parallelism`` at once; status counts and lists indexes as they end."""
        name = job["metadata"]["name"]
        spec = job["spec"]
        gate = asyncio.Semaphore(spec.get("parallelism") or 1)
        done: dict[str, set[int]] = {"succeeded": set(), "failed": set()}

        async def one(index: int) -> str:
            async with gate:
                outcome = "deadline"
                while deadline is None or time.monotonic() < deadline:
                    outcome = await self._run_pod(ns, job, deadline, index)
                    if outcome != "evicted":
                        break
                if outcome != "deleted":
                    done["succeeded" if outcome == "succeeded" else "failed"].add(index)
                    await self.api.patch(JOBS, ns, name, {"status": {
                        "succeeded": len(done["succeeded"]), "failed": len(done["failed"]),
                        "completedIndexes": _ranges(done["succeeded"]),
                        "failedIndexes": _ranges(done["failed"])}})
                return outcome

        await self.api.patch(JOBS, ns, name, {"status": {"startTime": _now(), "active": 1}})
        outcomes = await asyncio.gather(*(one(i) for i in range(spec["completions"])))
        if "deleted" in outcomes:
            return
        if "deadline" in outcomes:
            conditions = [_cond("FailureTarget", "DeadlineExceeded"), _cond("Failed", "DeadlineExceeded")]
        elif done["failed"]:
            conditions = [_cond("FailureTarget", "FailedIndexes"), _cond("Failed", "FailedIndexes")]
        else:
            conditions = [_cond("SuccessCriteriaMet", "CompletionsReached"),
                          _cond("Complete", "CompletionsReached")]
        await self.api.patch(JOBS, ns, name, {"status": {"active": 0, "conditions": conditions}})

    # -- the kubelet ---------------------------------------------------------------------------

    async def _run_pod(self, ns: str, job: dict[str, Any], deadline: float | None,
                       index: int | None = None) -> str:
        template = job["spec"]["template"]
        job_name = job["metadata"]["name"]
        pod_name = f"{job_name[:56]}-{secrets.token_hex(3)[:5]}"
        uid = job["metadata"]["uid"]
        labels = {**template.get("metadata", {}).get("labels", {}),
                  "batch.kubernetes.io/job-name": job_name, "job-name": job_name,
                  "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
        annotations = dict(template.get("metadata", {}).get("annotations") or {})
        spec = json.loads(json.dumps(template["spec"]))
        container = spec["containers"][0]
        if index is not None:  # what the Job controller adds to the pods of an Indexed Job
            pod_name = f"{job_name[:48]}-{index}-{secrets.token_hex(3)[:5]}"
            labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
            for each in spec["containers"]:
                each.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
        await self.api.put(PODS, ns, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "labels": labels, "annotations": annotations, "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid,
                 "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec,
            "status": {"phase": "Pending", "conditions": []},
        })
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
            await self._status(ns, pod_name, container, conditions=[
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: node(s) didn't match Pod's node affinity/selector.",
                 "lastTransitionTime": _now()}])
            return await self._until_deadline(ns, pod_name, container, deadline, self.deleted[uid])
        scheduled = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}]
        await self._status(ns, pod_name, container, conditions=scheduled,
                           state={"waiting": {"reason": "ContainerCreating"}})
        if container.get("image") in self.bad_images:
            await self._status(ns, pod_name, container, state={"waiting": {
                "reason": "ErrImagePull",
                "message": f"failed to pull image {container['image']!r}: not found"}})
            await asyncio.sleep(0.3)
            await self._status(ns, pod_name, container, state={"waiting": {
                "reason": "ImagePullBackOff", "message": f"Back-off pulling image {container['image']!r}"}})
            return await self._until_deadline(ns, pod_name, container, deadline, self.deleted[uid])
        volumes = await self._mount(ns, spec, pod_name, deadline, self.deleted[uid])
        if volumes is None:
            if self.deleted[uid].is_set():
                return "deleted"
            return await self._until_deadline(ns, pod_name, container, deadline, self.deleted[uid])
        return await self._start(ns, pod_name, spec, volumes, deadline, self.deleted[uid])

    async def _until_deadline(
        self, ns: str, pod: str, container: dict[str, Any], deadline: float | None, deleted: asyncio.Event
    ) -> str:
        while deadline is None or time.monotonic() < deadline:
            if deleted.is_set():
                return "deleted"
            await asyncio.sleep(0.1)
        await self._status(ns, pod, container, phase="Failed", reason="DeadlineExceeded")
        return "deadline"

    async def _mount(
        self, ns: str, spec: dict[str, Any], pod: str, deadline: float | None, deleted: asyncio.Event
    ) -> dict[str, Path] | None:
        """Wait for every ConfigMap volume (ContainerCreating), then write its files."""
        bundle = self.bundles / pod
        paths: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            if "configMap" not in volume:
                continue
            cm_name = volume["configMap"]["name"]
            while (cm := self.api.get(CONFIGMAPS, ns, cm_name)) is None:
                if (deadline is not None and time.monotonic() >= deadline) or deleted.is_set():
                    return None
                await asyncio.sleep(0.05)
            target = bundle / "volumes" / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            for key, text in (cm.get("data") or {}).items():
                (target / key).write_text(text)
            for key, b64 in (cm.get("binaryData") or {}).items():
                (target / key).write_bytes(base64.b64decode(b64))
            for child in target.iterdir():
                child.chmod(volume["configMap"].get("defaultMode", 0o644))
            paths[volume["name"]] = target
        return paths

    async def _start(self, ns: str, pod: str, spec: dict[str, Any], volumes: dict[str, Path],
                     deadline: float | None, deleted: asyncio.Event) -> str:
        container = spec["containers"][0]
        if self.hold:
            return await self._hold(ns, pod, container, deadline, deleted)
        bundle = self.bundles / pod
        (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(self._oci(spec, volumes, pod)))
        await self._status(ns, pod, container, phase="Running",
                           state={"running": {"startedAt": _now()}})
        self.pods_started += 1
        loop = asyncio.get_running_loop()
        evict = self.evict > 0
        if evict:
            self.evict -= 1
        proc = subprocess.Popen(
            [self.runsc, "--root", str(self.root), "--network=none", "run", "--bundle", str(bundle), pod],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        waiter = loop.run_in_executor(self.executor, proc.communicate)
        why = ""
        limit = None if deadline is None else max(deadline - time.monotonic(), 0)
        if evict:
            limit = 0.3 if limit is None else min(limit, 0.3)
        gone = loop.create_task(deleted.wait())
        try:
            await asyncio.wait({waiter, gone}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():  # deadline, eviction, or the Job was deleted: stop the container
                why = "deleted" if deleted.is_set() else "evicted" if evict else "deadline"
                await self._stop(pod, proc, waiter)
            out, err = waiter.result()
        finally:
            gone.cancel()
            await loop.run_in_executor(self.executor, self._delete, pod)
        if why == "deleted":
            return "deleted"
        self.api.logs[(ns, pod)] = out + err
        code = proc.returncode
        if why == "evicted":
            await self._status(ns, pod, container, phase="Failed", reason="Evicted", exit_code=KILLED,
                               term_reason="Error", conditions=[{
                                   "type": "DisruptionTarget", "status": "True",
                                   "reason": "EvictionByEvictionAPI",
                                   "message": "Eviction API: evicting", "lastTransitionTime": _now()}])
            return "evicted"
        if why == "deadline":
            await self._status(ns, pod, container, phase="Failed", reason="DeadlineExceeded",
                               exit_code=KILLED, term_reason="Error")
            return "deadline"
        if code == 0:
            await self._status(ns, pod, container, phase="Succeeded", exit_code=0, term_reason="Completed")
            return "succeeded"
        # Exit 137 that we did not cause is the memory cgroup's kill (what the runtime reports as OOMKilled).
        await self._status(ns, pod, container, phase="Failed", exit_code=code,
                           term_reason="OOMKilled" if code == KILLED else "Error")
        return "failed"

    async def _hold(self, ns: str, pod: str, container: dict[str, Any], deadline: float | None,
                    deleted: asyncio.Event) -> str:
        """Keep the pod Running, with no sandbox, until released, deleted or past its deadline."""
        if self._released is None:
            self._released = asyncio.Event()
        released = self._released
        await self._status(ns, pod, container, phase="Running", state={"running": {"startedAt": _now()}})
        self.pods_started += 1
        self.held += 1
        waits = {asyncio.ensure_future(released.wait()), asyncio.ensure_future(deleted.wait())}
        limit = None if deadline is None else max(deadline - time.monotonic(), 0)
        try:
            await asyncio.wait(waits, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.held -= 1
            for waiting in waits:
                waiting.cancel()
        shutil.rmtree(self.bundles / pod, ignore_errors=True)
        if deleted.is_set():
            return "deleted"
        if not released.is_set():
            await self._status(ns, pod, container, phase="Failed", reason="DeadlineExceeded",
                               exit_code=KILLED, term_reason="Error")
            return "deadline"
        self.api.logs[(ns, pod)] = held_log()
        await self._status(ns, pod, container, phase="Succeeded", exit_code=0, term_reason="Completed")
        return "succeeded"

    async def _stop(self, pod: str, proc: subprocess.Popen[bytes], waiter: Any) -> tuple[bytes, bytes]:
        """Kill the container until it is gone (it may not be registered with runsc yet)."""
        loop = asyncio.get_running_loop()
        for attempt in range(100):
            await loop.run_in_executor(self.executor, self._kill, pod)
            if attempt == 50:  # never registered: kill runsc itself
                proc.kill()
            try:
                result: tuple[bytes, bytes] = await asyncio.wait_for(asyncio.shield(waiter), 0.2)
                return result
            except TimeoutError:
                continue
        raise RuntimeError(f"could not stop pod {pod}")

    def _kill(self, pod: str) -> None:
        subprocess.run([self.runsc, "--root", str(self.root), "kill", "--all", pod, "KILL"],
                       capture_output=True, check=False, timeout=30)

    def _delete(self, pod: str) -> None:
        subprocess.run([self.runsc, "--root", str(self.root), "delete", "--force", pod],
                       capture_output=True, check=False, timeout=30)
        shutil.rmtree(self.bundles / pod, ignore_errors=True)

    def _oci(self, spec: dict[str, Any], volumes: dict[str, Path], pod: str) -> dict[str, Any]:
        """The OCI config the kubelet + runsc would use for this pod (image = host /usr)."""
        container = spec["containers"][0]
        limits = (container.get("resources") or {}).get("limits") or {}
        mem, cpu = limits.get("memory", "512Mi"), limits.get("cpu", "1")
        request = ExecutionRequest(code="pass", mem_limit=mem, mem_requested=mem, cpu_limit=cpu,
                                   cpu_requested=cpu)
        config = oci_config(Shape.of(request), Settings(), volumes.get("", Path("/nonexistent")), pod)
        pod_sc = spec.get("securityContext") or {}
        sc = {**pod_sc, **(container.get("securityContext") or {})}
        uid = int(sc.get("runAsUser", 0))
        gid = int(sc.get("runAsGroup", uid))
        process = config["process"]
        process["args"] = list(container.get("command") or []) + list(container.get("args") or [])
        process["env"] = [_PATH] + [f"{e['name']}={e.get('value', '')}" for e in container.get("env") or []]
        process["cwd"] = container.get("workingDir") or "/"
        process["user"] = {"uid": uid, "gid": gid}
        process["noNewPrivileges"] = True
        config["root"]["readonly"] = bool(sc.get("readOnlyRootFilesystem", False))
        by_name = {v["name"]: v for v in spec.get("volumes") or []}
        mounts = [m for m in config["mounts"] if m["destination"] not in ("/tmp", "/sandq")]
        for mount in container.get("volumeMounts") or []:
            volume = by_name[mount["name"]]
            if "configMap" in volume:
                mounts.append({"destination": mount["mountPath"], "type": "bind",
                               "source": str(volumes[mount["name"]]),
                               "options": ["rbind", "ro" if mount.get("readOnly") else "rw",
                                           "nosuid", "nodev"]})
            elif "emptyDir" in volume:
                size = int(parse_quantity(volume["emptyDir"].get("sizeLimit", "64Mi")))
                mounts.append({"destination": mount["mountPath"], "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", f"size={size}", "mode=1777"]})
        config["mounts"] = mounts
        config["process"]["rlimits"] = [r for r in process["rlimits"] if r["type"] != "RLIMIT_FSIZE"]
        return config

    async def _status(
        self, ns: str, pod: str, container: dict[str, Any], *, phase: str | None = None,
        reason: str | None = None, state: dict[str, Any] | None = None, exit_code: int | None = None,
        term_reason: str | None = None, conditions: list[dict[str, Any]] | None = None,
    ) -> None:
        current = self.api.get(PODS, ns, pod)
        if current is None:
            return
        status: dict[str, Any] = {}
        if phase:
            status["phase"] = phase
        if reason:
            status["reason"] = reason
        if exit_code is not None:
            state = {"terminated": {"exitCode": exit_code, "reason": term_reason or "Error",
                                    "finishedAt": _now()}}
        if state is not None:
            status["containerStatuses"] = [{
                "name": container["name"], "image": container.get("image", ""), "imageID": "",
                "ready": "running" in state, "restartCount": 0, "started": "running" in state,
                "state": state}]
        if conditions:
            kept = [c for c in current.get("status", {}).get("conditions") or []
                    if c["type"] not in {n["type"] for n in conditions}]
            status["conditions"] = kept + conditions
        await self.api.patch(PODS, ns, pod, {"status": status})


def _ranges(indexes: set[int]) -> str:
    """Indexes as the Job status lists them: ``"0-2,5"``."""
    parts: list[str] = []
    for index in sorted(indexes):
        if parts and parts[-1].split("-")[-1] == str(index - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{index}"
        else:
            parts.append(str(index))
    return ",".join(parts)


def _cond(kind: str, reason: str) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": reason,
            "lastProbeTime": _now(), "lastTransitionTime": _now()}
