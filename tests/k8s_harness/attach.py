"""The warm side of the node: a kubelet that starts a pod with ``stdin: true`` in runsc at once, and
serves ``pods/attach`` on it as a websocket, as the kubelet's ``ServeAttach`` does.

A warm pod's container starts as soon as its pod is created (the pool's pods are ready before any
claim): ``runsc run --network=none`` with pipes for stdin, stdout and stderr, in a bundle made from
the pod spec (its uid, limits, read-only root, its emptyDir ``/tmp`` as a tmpfs of its size). Its
stdout and stderr go to the pod's log as they come, and to each attached session on channels 1
and 2 (``v5.channel.k8s.io``, else ``v4``). Channel 0 feeds its stdin; ``[255, 0]`` (v5) closes it;
with ``stdinOnce`` stdin also closes when the first session ends. When the container exits, each
session gets ``Success`` on channel 3 (ServeAttach reports no exit code there) and is closed, and
the pod ends as a kubelet reports it (exit 0: Succeeded; otherwise Failed, ``OOMKilled`` when the
pod's memory cgroup saw an OOM kill, as ``node``'s kubelet tells it, else ``Error``).

Attaching to a pod that does not exist answers 404; to one whose container is not running, 400.
An attach is a websocket upgrade of a GET (RBAC ``get``); Kubernetes 1.35 also authorizes it as
``create`` (AuthorizePodWebsocketUpgradeCreatePermission), so both are recorded.

Faults: ``cut_attaches()`` resets every open session's connection; ``evict()`` evicts a pod through
the API (``DisruptionTarget``, its container killed, the pod deleted); a pod whose node selector the
node does not satisfy stays Pending, Unschedulable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
from kmock._internal import rendering
from kubernetes.utils.quantity import parse_quantity

from sandq.sandbox import environment
from sandq.sandbox.gvisor.bundle import Shape, make_root, oci_config
from sandq.settings import Settings
from tests.k8s_harness.cgroups import MemoryCgroup, remove_tree
from tests.k8s_harness.standin import PODS, Call, PodLog, RunningStandIn, _now

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
KILLED = 137
SUCCESS = json.dumps({"metadata": {}, "status": "Success"}).encode()
"""What ServeAttach writes on the error channel whenever the attach itself worked."""
_PATH = f"PATH={environment.MOUNT_POINT}/bin:/usr/local/bin:/usr/bin:/bin"  # the sandbox image's

OnChange = Callable[[str, str], Awaitable[None]]
"""Called with (namespace, pod name) after the kubelet changed a pod's status."""


def _status_response(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code,
            "reason": reason, "message": message}
    return aiohttp.web.json_response(body, status=code)


@dataclass
class Container:
    """One warm pod's running container: its runsc process, its sessions, whether its stdin is open."""

    ns: str
    pod: str
    uid: str
    runsc_id: str
    stdin_once: bool
    proc: asyncio.subprocess.Process | None = None
    sessions: set[aiohttp.web.WebSocketResponse] = field(default_factory=set)
    attaches: int = 0
    stdin_open: bool = True
    killed: bool = False
    cgroup: MemoryCgroup | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def close_stdin(self) -> None:
        if self.stdin_open and self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        self.stdin_open = False


class WarmKubelet:
    """Runs warm pods in runsc (under ``workdir``) and serves ``pods/attach`` on them."""

    def __init__(self, running: RunningStandIn, workdir: Path, on_change: OnChange,
                 node_labels: dict[str, str], runsc: str = "runsc") -> None:
        self.running = running
        self.api = running.api
        self.on_change = on_change
        self.node_labels = node_labels
        self.runsc = runsc
        self.root = workdir / "runsc-root"
        self.bundles = workdir / "bundles"
        self.root.mkdir(parents=True, exist_ok=True)
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.containers: dict[tuple[str, str], Container] = {}
        self.started = 0
        self.cgroup_root = f"sandq-standin-warm-{os.getpid()}-{secrets.token_hex(4)}"
        self._tasks: set[asyncio.Task[None]] = set()
        self.api.routes["pods/attach"] = self.serve_attach

    # -- pods ------------------------------------------------------------------------------

    async def start(self, ns: str, pod: dict[str, Any]) -> None:
        """Schedule and start a new pod's container (or leave it Pending if the node does not fit)."""
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        spec = pod["spec"]
        container_spec = spec["containers"][0]
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
            await self._patch(ns, name, {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "lastTransitionTime": _now(),
                "message": "0/1 nodes are available: node(s) didn't match Pod's node affinity/selector."}]})
            return
        container = Container(ns, name, uid, f"{name[:40]}-{uid[:8]}", bool(container_spec.get("stdinOnce")))
        self.containers[(ns, name)] = container
        bundle = self.bundles / container.runsc_id
        make_root(bundle / "rootfs")
        config = _oci(spec, container.runsc_id)
        if MemoryCgroup.available:  # as the Job pods' kubelet: the pod's cgroup tells an OOM kill apart
            limit = int(parse_quantity(((container_spec.get("resources") or {}).get("limits") or {})
                                       .get("memory", "512Mi")))
            container.cgroup = MemoryCgroup(self.cgroup_root, container.runsc_id, limit)
            config["linux"]["cgroupsPath"] = container.cgroup.runsc_path
            del config["linux"]["resources"]["memory"]
        (bundle / "config.json").write_text(json.dumps(config))
        self.api.logs[(ns, name)] = PodLog()
        container.proc = await asyncio.create_subprocess_exec(
            self.runsc, "--root", str(self.root), "--network=none", "run", "--bundle", str(bundle),
            container.runsc_id, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        self.started += 1
        await self._patch(ns, name, {
            "phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}], "startTime": _now(),
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": _now()}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [_container_status(container_spec, {"running": {"startedAt": _now()}})]})
        self._spawn(self._run(container, container_spec))

    async def _run(self, container: Container, container_spec: dict[str, Any]) -> None:
        assert container.proc is not None and container.proc.stdout and container.proc.stderr
        await asyncio.gather(self._pump(container, container.proc.stdout, STDOUT),
                             self._pump(container, container.proc.stderr, STDERR))
        code = await container.proc.wait()
        await asyncio.to_thread(self._delete_runsc, container.runsc_id)
        oom = code == KILLED  # without the cgroup: a SIGKILL nobody sent is taken for an OOM kill
        if container.cgroup is not None:
            oom = code == KILLED and container.cgroup.oom_killed()
            container.cgroup.remove()
        for session in list(container.sessions):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await session.send_bytes(bytes([ERROR]) + SUCCESS)
                await session.close()
        container.done.set()
        if container.killed:
            return
        reason = "Completed" if code == 0 else "OOMKilled" if oom else "Error"
        await self._patch(container.ns, container.pod, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": t, "status": "False", "lastTransitionTime": _now()}
                           for t in ("ContainersReady", "Ready")],
            "containerStatuses": [_container_status(container_spec, {"terminated": {
                "exitCode": code, "reason": reason, "finishedAt": _now()}})]})

    async def _pump(self, container: Container, stream: asyncio.StreamReader, channel: int) -> None:
        while chunk := await stream.read(65536):
            key = (container.ns, container.pod)
            if key in self.api.logs and self.containers.get(key) is container:
                self.api.logs[key].append(chunk)
            for session in list(container.sessions):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await session.send_bytes(bytes([channel]) + chunk)

    async def stop(self, ns: str, name: str) -> None:
        """Kill a pod's container (its pod is being deleted) and wait until it is gone."""
        container = self.containers.pop((ns, name), None)
        self.api.logs.pop((ns, name), None)
        if container is None or container.proc is None:
            return
        container.killed = True
        await asyncio.to_thread(self._kill_runsc, container.runsc_id)
        for _ in range(50):
            if container.done.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(container.done.wait(), 0.2)
            await asyncio.to_thread(self._kill_runsc, container.runsc_id)
        container.proc.kill()  # never registered with runsc: kill runsc itself
        await container.done.wait()

    async def evict(self, ns: str, name: str, on_deleted: Callable[[], Awaitable[None]]) -> None:
        """Evict a pod through the API: DisruptionTarget, its container killed, the pod deleted."""
        await self._patch(ns, name, {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting", "lastTransitionTime": _now()}]})
        await self.stop(ns, name)
        await self.api.remove(PODS, ns, name)
        await on_deleted()

    # -- pods/attach ----------------------------------------------------------------------

    async def serve_attach(self, request: rendering.Request, call: Call) -> aiohttp.web.StreamResponse:
        """The websocket of one attach session (recorded as ``get`` and, as 1.35 checks it, ``create``)."""
        self.api.calls.append(Call(call.group, call.resource, "create", call.name))
        ns, name = request.namespace or "", request.name or ""
        raw = request._raw_request
        assert raw is not None
        if self.api.get(PODS, ns, name) is None:
            return _status_response(404, "NotFound", f'pods "{name}" not found')
        container = self.containers.get((ns, name))
        if container is None or container.done.is_set():
            return _status_response(400, "BadRequest", f"container runner of pod {name} is not running")
        session = aiohttp.web.WebSocketResponse(protocols=PROTOCOLS)
        await session.prepare(raw)
        container.sessions.add(session)
        container.attaches += 1
        try:
            async for message in session:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                await self._on_message(container, session, message.data)
        finally:
            container.sessions.discard(session)
            if container.stdin_once:
                container.close_stdin()
        return session

    async def _on_message(
        self, container: Container, session: aiohttp.web.WebSocketResponse, data: bytes
    ) -> None:
        proc = container.proc
        if data[0] == STDIN and container.stdin_open and proc is not None and proc.stdin is not None:
            proc.stdin.write(data[1:])
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
        elif data[0] == CLOSE and session.ws_protocol == PROTOCOLS[0] and data[1:2] == bytes([STDIN]):
            container.close_stdin()

    def cut_attaches(self) -> int:
        """Reset the connection of every open attach session, mid-stream; how many were cut."""

        async def cut() -> int:
            sessions = [s for c in self.containers.values() for s in c.sessions]
            for session in sessions:
                transport = session._req.transport if session._req is not None else None
                if transport is not None:
                    transport.abort()
            return len(sessions)

        return self.running.run(cut())

    def attached(self) -> int:
        """How many attach sessions are open now."""
        return sum(len(c.sessions) for c in list(self.containers.values()))

    # -- helpers -----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _patch(self, ns: str, name: str, status: dict[str, Any]) -> None:
        if await self.api.patch(PODS, ns, name, {"status": status}):
            await self.on_change(ns, name)

    def _kill_runsc(self, runsc_id: str) -> None:
        subprocess.run([self.runsc, "--root", str(self.root), "kill", "--all", runsc_id, "KILL"],
                       capture_output=True, check=False, timeout=30)

    def _delete_runsc(self, runsc_id: str) -> None:
        subprocess.run([self.runsc, "--root", str(self.root), "delete", "--force", runsc_id],
                       capture_output=True, check=False, timeout=30)
        shutil.rmtree(self.bundles / runsc_id, ignore_errors=True)

    def close(self) -> None:
        """Kill every container left (nothing may outlive the cluster)."""
        for (ns, name) in list(self.containers):
            self.running.run(self.stop(ns, name), timeout=60)
        shutil.rmtree(self.bundles, ignore_errors=True)
        remove_tree(self.cgroup_root)


def _container_status(spec: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    running = "running" in state
    return {"name": spec["name"], "image": spec.get("image", ""), "imageID": "", "ready": running,
            "restartCount": 0, "started": running, "state": state}


def _oci(spec: dict[str, Any], runsc_id: str) -> dict[str, Any]:
    """The OCI config the kubelet and runsc would use for a warm pod (its image is the host's /usr)."""
    container = spec["containers"][0]
    limits = (container.get("resources") or {}).get("limits") or {}
    tmp = next((v["emptyDir"].get("sizeLimit", "64Mi") for v in spec.get("volumes") or [] if "emptyDir" in v),
               "64Mi")
    settings = Settings(tmp_size=tmp)
    env = environment.ensure(Settings())  # the sandbox image's environment, at /opt/sandq-env
    config = oci_config(Shape(limits.get("cpu", "1"), limits.get("memory", "512Mi")), settings,
                        Path("/nonexistent"), runsc_id, env)
    security = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    uid = int(security.get("runAsUser", 0))
    process = config["process"]
    process["args"] = list(container.get("command") or []) + list(container.get("args") or [])
    process["env"] = [_PATH] + [f"{e['name']}={e.get('value', '')}" for e in container.get("env") or []]
    process["cwd"] = container.get("workingDir") or "/"
    process["user"] = {"uid": uid, "gid": int(security.get("runAsGroup", uid))}
    process["rlimits"] = [r for r in process["rlimits"] if r["type"] != "RLIMIT_FSIZE"]
    config["root"]["readonly"] = bool(security.get("readOnlyRootFilesystem", False))
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sandq"]
    return config
