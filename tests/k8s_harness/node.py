"""The node: a kubelet that runs each pod's container in runsc (gVisor), as Kubernetes 1.31+ reports it.

A pod is scheduled (or stays Pending: a node selector it does not match, ``schedule_delay``),
admitted (``status.startTime``: its ``activeDeadlineSeconds`` counts from here), pulls its image
(``bad_images`` fail for good, ``flaky_images`` a number of times, with the kubelet's backoff),
mounts its ConfigMaps (retrying a missing one after 0.5 s, doubling), takes ``start_latency`` to
start, and runs: ConfigMap files bind-mounted read-only, a memory emptyDir as a tmpfs of its size,
a disk emptyDir as a host directory that the eviction manager measures every
``housekeeping_seconds``, the container's uid, limits and read-only root. Its output goes to the
pod's log as it comes, rotated at ``log_rotate_bytes`` by a check every ``log_check_seconds``
(0: at once). It ends as the kubelet reports it:

* exit 0: Succeeded; another exit: Failed, ``Error`` with the code;
* an OOM kill (seen on the pod's memory cgroup): ``OOMKilled``/137, or as ``oom_report`` says
  (``Error128``: gVisor's exit 128; ``Error``: a plain Error/137);
* deleted (by its Job's deadline, the garbage collector, an eviction): Failed, ``Error``/137, no
  pod reason; an eviction through the API adds ``DisruptionTarget`` first;
* its own deadline: Failed, reason ``DeadlineExceeded``, ``Error``/137;
* a storage limit: Failed, reason ``Evicted``, ``Error``/137, no ``DisruptionTarget``;
* ``lose`` (the runtime loses the container of these Jobs' pods): Failed, ``ContainerStatusUnknown``/137;
* stopped before its container started: ``ContainerStatusUnknown``/137 with no ``startedAt``;
  an unscheduled pod that is deleted gets ``DisruptionTarget`` from the pod garbage collector.

``hold`` starts no sandbox: pods stay Running until ``release()`` (or their end), then succeed
printing ``HELD_OUTPUT``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import secrets
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.utils.quantity import parse_quantity

from sandq.contract import ExecutionRequest
from sandq.sandbox import environment
from sandq.sandbox.gvisor.bundle import Shape, make_root, oci_config
from sandq.sandbox.runner import FRAME_BEGIN, FRAME_END
from sandq.settings import Settings
from tests.k8s_harness.cgroups import MemoryCgroup
from tests.k8s_harness.standin import CONFIGMAPS, PODS, PodLog, _now

if TYPE_CHECKING:
    from tests.k8s_harness.cluster import Cluster

KILLED = 137
SANDBOX_KILLED = 128
_PATH = f"PATH={environment.MOUNT_POINT}/bin:/usr/local/bin:/usr/bin:/bin"  # the sandbox image's
HELD_OUTPUT = "held\n"
IMAGE_BACKOFF_MAX = 300.0
UNKNOWN = {"reason": "ContainerStatusUnknown", "exitCode": KILLED,
           "message": "The container could not be located when the pod was terminated"}


def held_log() -> bytes:
    """The log of a held pod: the runner's frame of a success printing ``HELD_OUTPUT``."""
    doc = {"status": "succeeded", "exit_code": 0, "stdout": base64.b64encode(HELD_OUTPUT.encode()).decode(),
           "stderr": "", "output_files": []}
    return (FRAME_BEGIN + json.dumps(doc) + FRAME_END).encode()


@dataclass
class PodRun:
    """One pod on the node: what the Job controller made, and how it ended."""

    ns: str
    name: str
    job: str
    spec: dict[str, Any]
    deleting: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    """``succeeded``, ``failed`` or ``disrupted`` (a DisruptionTarget: the Job ignores it)."""

    @property
    def container(self) -> dict[str, Any]:
        return dict(self.spec["containers"][0])


@dataclass
class Container:
    """A running container: why it stopped (``exit`` or what stopped it) and its exit code."""

    started_at: str
    why: str = "exit"
    code: int = 0
    oom: bool = False
    message: str = ""


class Node:
    """The kubelet of the stand-in's one node; its knobs are the cluster's."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.api = cluster.api
        self.root = cluster.workdir / "runsc-root"
        self.bundles = cluster.workdir / "bundles"
        self.root.mkdir(parents=True, exist_ok=True)
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.cgroup_root = f"sandq-standin-{os.getpid()}-{secrets.token_hex(4)}"

    # -- the pod's life ------------------------------------------------------------------------

    async def run(self, pod: PodRun) -> None:
        """Run ``pod`` to its end; its outcome goes to ``pod.outcome``."""
        try:
            outcome = await self._life(pod)
        except Exception as error:  # a bug here must not hang the Job controller
            pod.outcome.set_exception(error)
            raise
        finally:
            shutil.rmtree(self.bundles / pod.name, ignore_errors=True)
        pod.outcome.set_result(outcome)

    async def _life(self, pod: PodRun) -> str:
        c = self.cluster
        selector = pod.spec.get("nodeSelector") or {}
        if any(c.node_labels.get(k) != v for k, v in selector.items()):
            await self._status(pod, conditions=[_condition(
                "PodScheduled", "False", "Unschedulable",
                "0/1 nodes are available: node(s) didn't match Pod's node affinity/selector.")])
            await pod.deleting.wait()
            return await self._collected_unscheduled(pod)
        if await self._wait(pod, c.schedule_delay, None):
            return await self._collected_unscheduled(pod)
        seconds = pod.spec.get("activeDeadlineSeconds")
        deadline = None if seconds is None else time.monotonic() + float(seconds)
        await self._status(pod, phase="Pending", start_time=True,
                           conditions=[_condition("PodScheduled", "True")],
                           state={"waiting": {"reason": "ContainerCreating"}})
        stop = await self._pull(pod, deadline)
        volumes: dict[str, Path] = {}
        if stop is None:
            stop = await self._mount(pod, deadline, volumes)
        if stop is None:
            stop = await self._wait(pod, c.start_latency, deadline)
        if stop is not None:
            await self._status(pod, phase="Failed", state={"terminated": {**UNKNOWN, "finishedAt": _now()}},
                               **_deadline_reason(stop))
            return "failed"
        return await self._ended(pod, await self._run(pod, volumes, deadline))

    async def _wait(self, pod: PodRun, seconds: float, deadline: float | None) -> str | None:
        """Wait ``seconds`` (inf: forever); ``deleted`` or ``deadline`` if that came first, else None."""
        limit = seconds
        if deadline is not None:
            limit = min(limit, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pod.deleting.wait(), None if math.isinf(limit) else max(limit, 0))
        if pod.deleting.is_set():
            return "deleted"
        if deadline is not None and time.monotonic() >= deadline:
            return "deadline"
        return None

    async def _collected_unscheduled(self, pod: PodRun) -> str:
        """An unscheduled pod being deleted: the pod garbage collector fails it (1.26+)."""
        await self._status(pod, phase="Failed", conditions=[_condition(
            "DisruptionTarget", "True", "DeletionByPodGC", "PodGC: unscheduled and terminating")])
        return "disrupted"

    async def _pull(self, pod: PodRun, deadline: float | None) -> str | None:
        """Pull the image: a bad one fails for ever, a flaky one a number of times (with backoff)."""
        c = self.cluster
        image = str(pod.container.get("image"))
        backoff = c.image_backoff
        troubled = False
        while image in c.bad_images or c.flaky_images.get(image, 0) > 0:
            troubled = True
            if image in c.bad_images:
                why = f"failed to pull image {image!r}: not found"
            else:
                c.flaky_images[image] -= 1
                why = f"failed to pull image {image!r}: 429 Too Many Requests"
            await self._status(pod, state={"waiting": {"reason": "ErrImagePull", "message": why}})
            if stop := await self._wait(pod, min(0.3, backoff), deadline):
                return stop
            await self._status(pod, state={"waiting": {
                "reason": "ImagePullBackOff", "message": f"Back-off pulling image {image!r}"}})
            if stop := await self._wait(pod, backoff, deadline):
                return stop
            backoff = min(backoff * 2, IMAGE_BACKOFF_MAX)
        if troubled:
            await self._status(pod, state={"waiting": {"reason": "ContainerCreating"}})
        return None

    async def _mount(self, pod: PodRun, deadline: float | None, paths: dict[str, Path]) -> str | None:
        """Mount each volume: wait for a ConfigMap (retrying after 0.5 s, doubling), write its files."""
        delay = self.cluster.mount_backoff
        for volume in pod.spec.get("volumes") or []:
            target = self.bundles / pod.name / "volumes" / volume["name"]
            if "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory":
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o1777)
                paths[volume["name"]] = target
            if "configMap" not in volume:
                continue
            while (cm := self.api.get(CONFIGMAPS, pod.ns, volume["configMap"]["name"])) is None:
                if stop := await self._wait(pod, delay, deadline):
                    return stop
                delay = min(delay * 2, self.cluster.mount_backoff_max)
            target.mkdir(parents=True, exist_ok=True)
            for key, text in (cm.get("data") or {}).items():
                (target / key).write_text(text)
            for key, b64 in (cm.get("binaryData") or {}).items():
                (target / key).write_bytes(base64.b64decode(b64))
            for child in target.iterdir():
                child.chmod(volume["configMap"].get("defaultMode", 0o644))
            paths[volume["name"]] = target
        return None

    # -- the running container -------------------------------------------------------------------

    async def _run(self, pod: PodRun, volumes: dict[str, Path], deadline: float | None) -> Container:
        c = self.cluster
        log = PodLog(rotate_at=c.log_rotate_bytes if c.log_check_seconds == 0 else None)
        self.api.logs[(pod.ns, pod.name)] = log
        container = Container(started_at=_now())
        await self._status(pod, phase="Running", state={"running": {"startedAt": container.started_at}})
        c.pods_started += 1
        if c.hold:
            await self._hold(pod, container, log, deadline)
            return container
        cgroup = None
        if MemoryCgroup.available:
            cgroup = MemoryCgroup(self.cgroup_root, pod.name, _memory_limit(pod))
        bundle = self.bundles / pod.name
        make_root(bundle / "rootfs")
        (bundle / "config.json").write_text(json.dumps(self._oci(pod, volumes, cgroup)))
        loop = asyncio.get_running_loop()
        proc = subprocess.Popen(
            [c.runsc, "--root", str(self.root), "--network=none", "run", "--bundle", str(bundle), pod.name],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        exited = loop.run_in_executor(c.executor, _pump, proc, log)
        watchers = self._watchers(pod, container, volumes, log, deadline)
        try:
            await asyncio.wait({exited, *watchers}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await self._stop(pod.name, proc, exited)
            container.code = exited.result()
        finally:
            for watcher in watchers:
                watcher.cancel()
            await loop.run_in_executor(c.executor, self._delete, pod.name)
            if cgroup is not None:
                container.oom = container.why == "exit" and cgroup.oom_killed()
                cgroup.remove()
        if cgroup is None:  # nothing tells an OOM kill apart: a SIGKILL nobody sent is taken for one
            container.oom = container.why == "exit" and container.code == KILLED
        return container

    def _watchers(self, pod: PodRun, container: Container, volumes: dict[str, Path], log: PodLog,
                  deadline: float | None) -> set[asyncio.Task[None]]:
        """What may stop the container before it exits, each setting ``container.why`` first."""
        c = self.cluster
        loop = asyncio.get_running_loop()
        evict = c.evict > 0
        c.evict -= evict
        lose = not evict and pod.job in c.lose

        async def stopper(why: str, waiting: Any) -> None:
            await waiting
            container.why = container.why if container.why != "exit" else why

        async def after(seconds: float) -> None:
            await asyncio.sleep(max(seconds, 0))

        tasks = {loop.create_task(stopper("deleted", pod.deleting.wait()))}
        if deadline is not None:
            tasks.add(loop.create_task(stopper("deadline", after(deadline - time.monotonic()))))
        if evict:
            tasks.add(loop.create_task(self._evict(pod)))
        if lose:
            tasks.add(loop.create_task(stopper("lost", after(0.3))))
        tasks.add(loop.create_task(stopper("evicted", self._storage(pod, container, volumes, log))))
        if c.log_check_seconds > 0:
            tasks.add(loop.create_task(self._rotate(log)))
        return tasks

    async def _evict(self, pod: PodRun) -> None:
        """An eviction through the API, 0.3 s in: DisruptionTarget, then the pod is deleted."""
        await asyncio.sleep(0.3)
        await self._status(pod, conditions=[_condition(
            "DisruptionTarget", "True", "EvictionByEvictionAPI", "Eviction API: evicting")])
        await self.api.delete(PODS, pod.ns, pod.name)

    async def _storage(
        self, pod: PodRun, container: Container, volumes: dict[str, Path], log: PodLog
    ) -> None:
        """The eviction manager: every ``housekeeping_seconds``, a disk emptyDir over its sizeLimit, or
        the pod's disk (emptyDirs and log) over its ephemeral-storage limit, evicts the pod."""
        disks = {v["name"]: v["emptyDir"] for v in pod.spec.get("volumes") or []
                 if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"}
        limit = ((pod.container.get("resources") or {}).get("limits") or {}).get("ephemeral-storage")
        while True:
            await asyncio.sleep(self.cluster.housekeeping_seconds)
            used = {name: await asyncio.to_thread(_disk_usage, volumes[name]) for name in disks}
            for name, empty_dir in disks.items():
                size = empty_dir.get("sizeLimit")
                if size is not None and used[name] > parse_quantity(size):
                    container.message = f'Usage of EmptyDir volume "{name}" exceeds the limit "{size}". '
                    return
            total = sum(used.values()) + len(log.read())
            if limit is not None and total > parse_quantity(limit):
                container.message = (
                    f"Pod ephemeral local storage usage exceeds the total limit of containers {limit}. ")
                return

    async def _rotate(self, log: PodLog) -> None:
        """The container log manager: every ``log_check_seconds``, rotate a file over the size."""
        while True:
            await asyncio.sleep(self.cluster.log_check_seconds)
            log.rotate_if_over(self.cluster.log_rotate_bytes)

    async def _hold(self, pod: PodRun, container: Container, log: PodLog, deadline: float | None) -> None:
        """Keep the pod Running, with no sandbox, until released, deleted or past its deadline."""
        c = self.cluster
        released = c.released()
        c.held += 1
        try:
            waits = {asyncio.ensure_future(released.wait()), asyncio.ensure_future(pod.deleting.wait())}
            limit = None if deadline is None else max(deadline - time.monotonic(), 0)
            await asyncio.wait(waits, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
        finally:
            c.held -= 1
        if pod.deleting.is_set():
            container.why, container.code = "deleted", KILLED
        elif not released.is_set():
            container.why, container.code = "deadline", KILLED
        else:
            log.append(held_log())

    async def _ended(self, pod: PodRun, container: Container) -> str:
        """Report how the container ended, as the kubelet does; the outcome for the Job controller."""
        c = self.cluster
        terminated: dict[str, Any] = {"startedAt": container.started_at, "finishedAt": _now()}
        pod_fields: dict[str, Any] = {}
        outcome = "failed"
        if container.why == "exit" and container.code == 0:
            terminated.update(exitCode=0, reason="Completed")
            outcome = "succeeded"
        elif container.oom:
            report = c.oom_reports.get(pod.job, c.oom_report)
            code = SANDBOX_KILLED if report == "Error128" else KILLED
            terminated.update(exitCode=code, reason="OOMKilled" if report == "OOMKilled" else "Error")
        elif container.why == "lost":
            terminated = {**UNKNOWN, "finishedAt": terminated["finishedAt"]}
        elif container.why == "evicted":
            terminated.update(exitCode=KILLED, reason="Error")
            pod_fields = {"reason": "Evicted", "message": container.message}
        else:
            code = container.code if container.why == "exit" else KILLED
            terminated.update(exitCode=code, reason="Error")
            pod_fields = _deadline_reason(container.why)
        current = self.api.get(PODS, pod.ns, pod.name) or {}
        conditions = (current.get("status") or {}).get("conditions") or []
        if any(cond.get("type") == "DisruptionTarget" for cond in conditions):
            outcome = "disrupted"
        phase = "Succeeded" if outcome == "succeeded" else "Failed"
        await self._status(pod, phase=phase, state={"terminated": terminated}, **pod_fields)
        return outcome

    async def _stop(self, name: str, proc: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
        """Kill the container until it is gone (it may not be registered with runsc yet)."""
        loop = asyncio.get_running_loop()
        for attempt in range(100):
            await loop.run_in_executor(self.cluster.executor, self.kill, name)
            if attempt == 50:  # never registered: kill runsc itself
                proc.kill()
            try:
                await asyncio.wait_for(asyncio.shield(exited), 0.2)
                return
            except TimeoutError:
                continue
        raise RuntimeError(f"could not stop pod {name}")

    def kill(self, name: str) -> None:
        subprocess.run([self.cluster.runsc, "--root", str(self.root), "kill", "--all", name, "KILL"],
                       capture_output=True, check=False, timeout=30)

    def _delete(self, name: str) -> None:
        subprocess.run([self.cluster.runsc, "--root", str(self.root), "delete", "--force", name],
                       capture_output=True, check=False, timeout=30)

    def sweep(self) -> None:
        """Kill and delete every sandbox left on the node."""
        listed = subprocess.run([self.cluster.runsc, "--root", str(self.root), "list", "-quiet"],
                                capture_output=True, check=False, text=True).stdout.split()
        for name in listed:
            self.kill(name)
            self._delete(name)

    def _oci(self, pod: PodRun, volumes: dict[str, Path], cgroup: MemoryCgroup | None) -> dict[str, Any]:
        """The OCI config the kubelet + runsc would use for this pod (image = host /usr)."""
        container = pod.container
        limits = (container.get("resources") or {}).get("limits") or {}
        shape = Shape.of(ExecutionRequest(code="pass", mem_limit=limits.get("memory", "512Mi"),
                                          cpu_limit=limits.get("cpu", "1"), cpu_requested="1m",
                                          mem_requested="1Ki"))
        env = environment.ensure(Settings())  # the sandbox image's environment, at /opt/sandq-env
        config = oci_config(shape, Settings(), Path("/nonexistent"), pod.name, env)
        if cgroup is not None:
            config["linux"]["cgroupsPath"] = cgroup.runsc_path
            del config["linux"]["resources"]["memory"]
        sc = {**(pod.spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        uid = int(sc.get("runAsUser", 0))
        process = config["process"]
        process["args"] = list(container.get("command") or []) + list(container.get("args") or [])
        process["env"] = [_PATH] + [f"{e['name']}={e.get('value', '')}" for e in container.get("env") or []]
        process["cwd"] = container.get("workingDir") or "/"
        process["user"] = {"uid": uid, "gid": int(sc.get("runAsGroup", uid))}
        process["noNewPrivileges"] = True
        process["rlimits"] = [r for r in process["rlimits"] if r["type"] != "RLIMIT_FSIZE"]
        config["root"]["readonly"] = bool(sc.get("readOnlyRootFilesystem", False))
        by_name = {v["name"]: v for v in pod.spec.get("volumes") or []}
        mounts = [m for m in config["mounts"] if m["destination"] not in ("/tmp", "/sandq")]
        for mount in container.get("volumeMounts") or []:
            volume = by_name[mount["name"]]
            if mount["name"] in volumes:
                mounts.append({"destination": mount["mountPath"], "type": "bind",
                               "source": str(volumes[mount["name"]]),
                               "options": ["rbind", "ro" if mount.get("readOnly") else "rw", "nosuid",
                                           "nodev"]})
            elif "emptyDir" in volume:
                size = int(parse_quantity(volume["emptyDir"].get("sizeLimit", "64Mi")))
                mounts.append({"destination": mount["mountPath"], "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", f"size={size}", "mode=1777"]})
        config["mounts"] = mounts
        return config

    async def _status(
        self, pod: PodRun, *, phase: str | None = None, reason: str | None = None, message: str | None = None,
        state: dict[str, Any] | None = None, conditions: list[dict[str, Any]] | None = None,
        start_time: bool = False,
    ) -> None:
        current = self.api.get(PODS, pod.ns, pod.name)
        if current is None:
            return
        status: dict[str, Any] = {}
        if phase:
            status["phase"] = phase
        if reason:
            status["reason"] = reason
            status["message"] = message or reason
        if start_time:
            status["startTime"] = _now()
        if state is not None:
            container = pod.container
            status["containerStatuses"] = [{
                "name": container["name"], "image": container.get("image", ""), "imageID": "",
                "ready": "running" in state, "restartCount": 0, "started": "running" in state,
                "state": state}]
        if conditions:
            kept = [cond for cond in current.get("status", {}).get("conditions") or []
                    if cond["type"] not in {n["type"] for n in conditions}]
            status["conditions"] = kept + conditions
        await self.api.patch(PODS, pod.ns, pod.name, {"status": status})


def _pump(proc: subprocess.Popen[bytes], log: PodLog) -> int:
    """Copy the container's stdout and stderr into its log as they come; its exit status at EOF."""
    streams = [s for s in (proc.stdout, proc.stderr) if s is not None]
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                chunk = os.read(key.fd, 65536)
                if chunk:
                    log.append(chunk)
                else:
                    selector.unregister(key.fileobj)
    return proc.wait()


def _disk_usage(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _memory_limit(pod: PodRun) -> int:
    limits = (pod.container.get("resources") or {}).get("limits") or {}
    return int(parse_quantity(limits.get("memory", "512Mi")))


def _deadline_reason(why: str) -> dict[str, str]:
    if why != "deadline":
        return {}
    return {"reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline"}


def _condition(
    kind: str, status: str, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": _now()}
    if reason:
        cond["reason"] = reason
        cond["message"] = message or reason
    return cond
