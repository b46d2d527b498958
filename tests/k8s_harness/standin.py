"""An API server stand-in: kmock's emulator plus what it lacks, served from a thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import random
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
from kmock._internal import enums, rendering

from tests.k8s_harness import watches

T = TypeVar("T")
Route = Callable[[rendering.Request, "Call"], Awaitable[aiohttp.web.StreamResponse]]

JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")

_VERBS = {
    enums.action.LIST: "list",
    enums.action.WATCH: "watch",
    enums.action.FETCH: "get",
    enums.action.CREATE: "create",
    enums.action.UPDATE: "patch",
    enums.action.DELETE: "delete",
}


@dataclass(frozen=True)
class Call:
    """One API request as RBAC sees it."""

    group: str
    resource: str
    verb: str
    name: str | None
    status: int = 0

    @property
    def permission(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


@dataclass
class FaultRule:
    """Answer matching requests with a fault instead of serving them (state is not changed).

    kind: ``status`` (HTTP error ``status``, optional Retry-After), ``abort``
    (connection closed without an answer), ``lost`` (served, then the connection
    closed: the client never learns it succeeded), ``drop`` (a watch that ends at
    once), ``gone`` (a watch answering with a 410 ERROR event).
    """

    verb: str
    resource: str
    kind: str = "status"
    status: int = 500
    times: int = 1
    retry_after: str | None = None
    message: str = "injected fault"
    name: Callable[[str | None], bool] = lambda _: True
    hits: int = 0

    def matches(self, call: Call) -> bool:
        return (
            self.hits < self.times and self.verb == call.verb and self.resource == call.resource
            and self.name(call.name)
        )


@dataclass
class RandomFaults:
    """Fail a share (``rate``) of all API calls at random, from a seeded generator.

    Each faulted call gets one of the faults of ``FaultRule`` that fits its verb: HTTP 500 or
    503, 429 with Retry-After, a connection reset (``abort``); for creates also ``lost`` (served,
    answer never delivered); for watches also ``drop`` (the stream ends at once) and ``gone``
    (410). ``injected`` counts the faults by (verb, resource, kind, status).
    """

    rate: float
    seed: int = 0
    retry_after: str = "1"
    injected: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self, call: Call) -> FaultRule | None:
        """The fault for ``call``, or None to serve it."""
        if self.rng.random() >= self.rate:
            return None
        choices: list[tuple[str, int]] = [("status", 500), ("status", 503), ("status", 429), ("abort", 500)]
        if call.verb == "create":
            choices.append(("lost", 0))
        if call.verb == "watch":
            choices += [("drop", 0), ("drop", 0), ("gone", 0)]
        kind, status = self.rng.choice(choices)
        key = (call.verb, call.resource, kind, status)
        self.injected[key] = self.injected.get(key, 0) + 1
        return FaultRule(call.verb, call.resource, kind=kind, status=status or 500,
                         retry_after=self.retry_after if status == 429 else None, message="random fault")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


CONFIGMAP_MAX_BYTES = 1024 * 1024
"""The API server's limit on a ConfigMap's data plus decoded binaryData (ValidateConfigMap)."""
SERVED = {JOBS: "Job", PODS: "Pod", CONFIGMAPS: "ConfigMap"}
"""The resources whose lists and watches the stand-in serves itself (kmock's lack selectors and rvs)."""


def _status(code: int, reason: str, message: str, **details: Any) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code,
            "reason": reason, "message": message, "details": details}
    return aiohttp.web.json_response(body, status=code)


def configmap_size(obj: dict[str, Any]) -> int:
    """Bytes a ConfigMap holds as the API server counts them: data values plus decoded binaryData."""
    text = sum(len(str(v).encode()) for v in (obj.get("data") or {}).values())
    return text + sum(len(base64.b64decode(v)) for v in (obj.get("binaryData") or {}).values())


@dataclass
class PodLog:
    """A container's log as the kubelet keeps it: the current file (all ``GET pods/log`` returns)
    and the files rotated away. ``rotate_at``: rotate as soon as the current file passes it."""

    current: bytearray = field(default_factory=bytearray)
    rotated: list[bytes] = field(default_factory=list)
    rotate_at: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, chunk: bytes) -> None:
        with self.lock:
            self.current += chunk
            if self.rotate_at is not None and len(self.current) > self.rotate_at:
                self._rotate()

    def rotate_if_over(self, size: int) -> bool:
        """Rotate if the current file is over ``size`` (the kubelet's periodic check); True if it was."""
        with self.lock:
            if len(self.current) <= size:
                return False
            self._rotate()
            return True

    def _rotate(self) -> None:
        self.rotated.append(bytes(self.current))
        self.current.clear()

    def read(self) -> bytes:
        with self.lock:
            return bytes(self.current)


@attrs.define(kw_only=True)
class StandIn(kmock.KubernetesEmulator):
    """KubernetesEmulator plus uids, resourceVersions, watches as the API server serves them,
    finalizers, GC, size limits, logs, counting and faults."""

    calls: list[Call] = attrs.field(factory=list)
    faults: list[FaultRule] = attrs.field(factory=list)
    logs: dict[tuple[str, str], PodLog] = attrs.field(factory=dict)
    hooks: list[Callable[[str, str, str, dict[str, Any]], None]] = attrs.field(factory=list)
    deleting: list[Callable[[Any, str, str], None]] = attrs.field(factory=list)
    """Called with (resource, namespace, name) when an object with finalizers gets its deletionTimestamp."""
    # Issue 16 (warm sandboxes): what serves a resource instead of kmock (pods/attach: attach.py).
    routes: dict[str, Route] = attrs.field(factory=dict)
    random_faults: RandomFaults | None = None
    open_watches: set[Any] = attrs.field(factory=set)
    history: watches.History = attrs.field(factory=watches.History)
    watch_log: list[watches.WatchRecord] = attrs.field(factory=list)
    bookmark_seconds: float | None = 1.0
    """How often a watch that allows bookmarks gets one (the API server: about once a minute)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = watches.Buses(self.history)

    # -- direct state changes (for the controllers) ---------------------------------

    def get(self, res: Any, ns: str, name: str) -> dict[str, Any] | None:
        key = (res, ns, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return dict(self._objects[key].raw)

    def items(self, res: Any) -> list[dict[str, Any]]:
        out = []
        for (r, _ns, _name), obj in self._objects.items():
            if r == res and not obj.deleted:
                out.append(obj.raw)
        return out

    async def put(self, res: Any, ns: str, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["namespace"] = ns
        async with self._lock:
            key = (res, ns, meta["name"])
            if key in self._objects:
                self._objects[key].create(obj)
            else:
                self._objects[key] = obj
            await self._buses[res].put({"type": "ADDED", "object": self._objects[key].raw})

    async def patch(self, res: Any, ns: str, name: str, changes: dict[str, Any]) -> bool:
        async with self._lock:
            key = (res, ns, name)
            if key not in self._objects or self._objects[key].deleted:
                return False
            self._objects[key].patch(changes)
            await self._buses[res].put({"type": "MODIFIED", "object": self._objects[key].raw})
            return True

    async def remove(self, res: Any, ns: str, name: str) -> bool:
        async with self._lock:
            key = (res, ns, name)
            if key not in self._objects or self._objects[key].deleted:
                return False
            raw = self._objects[key].raw
            self._objects[key].delete()
            await self._buses[res].put({"type": "DELETED", "object": raw})
            return True

    async def delete(self, res: Any, ns: str, name: str) -> None:
        """Delete as the API server does: an object with finalizers only gets a deletionTimestamp."""
        obj = self.get(res, ns, name)
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        if not meta.get("finalizers"):
            await self.remove(res, ns, name)
        elif not meta.get("deletionTimestamp"):
            await self.patch(res, ns, name, {"metadata": {
                "deletionTimestamp": _now(), "deletionGracePeriodSeconds": 0}})
            for hook in self.deleting:
                hook(res, ns, name)

    async def finalize(self, res: Any, ns: str, name: str, finalizer: str) -> None:
        """Remove ``finalizer``; an object being deleted then goes."""
        obj = self.get(res, ns, name)
        if obj is None:
            return
        left = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        await self.patch(res, ns, name, {"metadata": {"finalizers": left or None}})
        if not left and obj["metadata"].get("deletionTimestamp"):
            await self.remove(res, ns, name)

    async def collect_garbage(self, ns: str, owner_uid: str) -> None:
        """Delete what ``owner_uid`` owned (the garbage collector, background propagation)."""
        for res in (PODS, CONFIGMAPS):
            for obj in self.items(res):
                refs = obj.get("metadata", {}).get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    await self.delete(res, obj["metadata"]["namespace"], obj["metadata"]["name"])

    def owner_exists(self, obj: dict[str, Any]) -> bool:
        ns = obj["metadata"]["namespace"]
        for ref in obj.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                job = self.get(JOBS, ns, ref["name"])
                if job is None or job["metadata"]["uid"] != ref.get("uid"):
                    return False
        return True

    def versions(self, res: Any, ns: str, name: str) -> list[dict[str, Any]]:
        """Every state the object had, oldest first (deletions left out)."""
        history = self._objects[res, ns, name].history
        return [dict(version.raw) for version in history if version is not None]

    def names(self, res: Any) -> list[str]:
        """The names of every object of ``res`` ever stored, deleted ones too."""
        return [name for (r, _ns, name) in self._objects if r == res]

    def compact(self) -> None:
        """etcd's compaction: a watch resuming from any resourceVersion so far gets 410 Gone."""
        self.history.compact()

    # -- the request path -------------------------------------------------------------

    @staticmethod
    def _call(request: rendering.Request) -> Call | None:
        if request.resource is None or request.action is None:
            return None
        resource = str(request.resource.plural)
        if request.subresource:
            resource += "/" + request.subresource
        name = request.name
        if name is None and request.action == enums.action.CREATE and isinstance(request.data, dict):
            name = (request.data.get("metadata") or {}).get("name")
        return Call(str(request.resource.group), resource, _VERBS[request.action], name)

    async def _fault(self, request: rendering.Request, rule: FaultRule) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        if rule.kind == "abort":
            if raw.transport is not None:
                raw.transport.abort()
            return aiohttp.web.Response(status=500)
        if rule.kind in ("drop", "gone"):
            resp = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await resp.prepare(raw)
            if rule.kind == "gone":
                await resp.write(json.dumps(watches.GONE_EVENT).encode() + b"\n")
            await resp.write_eof()
            return resp
        headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "code": rule.status, "reason": "Injected", "message": rule.message}
        return aiohttp.web.json_response(body, status=rule.status, headers=headers)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Serve, then drop the request from kmock's logs: kmock matches each new one against them all.

        A body may take up to ``MAX_REQUEST_BODY`` (set on the request: a server's own request factory
        would break the websocket upgrade of ``pods/attach`` in aiohttp 3.14).
        """
        raw_request._client_max_size = MAX_REQUEST_BODY
        try:
            return await super().__call__(raw_request)
        finally:
            for log in [self._requests, *(payload._requests for payload in self._payloads)]:
                for i in range(len(log) - 1, -1, -1):
                    if log[i]._raw_request is raw_request:
                        del log[i]
                        break

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        call = self._call(request)
        if call is None:
            return await super()._handle(request)
        for rule in self.faults:
            if rule.matches(call):
                return await self._inject(request, call, rule)
        if self.random_faults is not None and (chosen := self.random_faults.pick(call)) is not None:
            return await self._inject(request, call, chosen)
        self.calls.append(call)
        transport = request._raw_request.transport if request._raw_request is not None else None
        if call.verb != "watch" or transport is None:
            return await self._serve_call(request, call)
        self.open_watches.add(transport)
        try:
            return await self._serve_call(request, call)
        finally:
            self.open_watches.discard(transport)

    def cut_watches(self) -> int:
        """Reset the connection of every open watch, mid-stream (on the loop); how many were cut."""
        cut = list(self.open_watches)
        self.open_watches.clear()
        for transport in cut:
            transport.abort()
        return len(cut)

    async def _inject(
        self, request: rendering.Request, call: Call, rule: FaultRule
    ) -> aiohttp.web.StreamResponse:
        rule.hits += 1
        self.calls.append(Call(call.group, call.resource, call.verb, call.name, rule.status))
        if rule.kind != "lost":
            return await self._fault(request, rule)
        response = await self._serve_call(request, call)
        raw = request._raw_request
        if raw is not None and raw.transport is not None:
            raw.transport.abort()  # served, but the answer never arrives
        return response

    async def _serve_call(self, request: rendering.Request, call: Call) -> aiohttp.web.StreamResponse:
        ns = request.namespace or ""
        if (route := self.routes.get(call.resource)) is not None:  # issue 16: pods/attach
            return await route(request, call)
        if call.resource == "pods/log" and call.verb == "get":
            return self._serve_log(request, ns)
        if call.verb in ("list", "watch") and request.resource in SERVED:
            return await self._serve_collection(request, call, ns)
        if call.verb == "create" and isinstance(request.data, dict):
            if call.resource == "configmaps" and configmap_size(request.data) > CONFIGMAP_MAX_BYTES:
                message = f"Too long: must have at most {CONFIGMAP_MAX_BYTES} bytes"
                return _status(422, "Invalid", f'ConfigMap "{call.name}" is invalid: []: {message}',
                               name=call.name, kind="configmaps",
                               causes=[{"reason": "FieldValueTooLong", "message": message, "field": "[]"}])
            meta = request.data.setdefault("metadata", {})
            meta["namespace"] = ns or meta.get("namespace")
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
        response = await super()._handle(request)
        if response.status == 200 and call.verb == "create":  # issue 16: as the API server answers
            response.set_status(201)
        if response.status < 300 and call.verb in ("create", "delete"):
            name = call.name or (request.data or {}).get("metadata", {}).get("name")
            obj = self.get(request.resource, ns, name) if call.verb == "create" else None
            if call.verb == "delete":
                history = self._objects[(request.resource, ns, name)]
                obj = dict(history.last.raw)
            for hook in self.hooks:
                hook(call.verb, call.resource, ns, obj or {})
            if call.verb == "delete" and call.resource == "jobs" and obj:
                asyncio.get_running_loop().create_task(self.collect_garbage(ns, obj["metadata"]["uid"]))
            if call.verb == "create" and call.resource == "configmaps" and obj and not self.owner_exists(obj):
                asyncio.get_running_loop().create_task(self.remove(CONFIGMAPS, ns, obj["metadata"]["name"]))
        return response

    async def _serve_collection(
        self, request: rendering.Request, call: Call, ns: str
    ) -> aiohttp.web.StreamResponse:
        """A list or a watch, with resourceVersions, selectors, bookmarks and timeouts."""
        params = dict(request.params)
        match = watches.object_match(ns or None, params)
        current = sorted((o for o in self.items(request.resource) if match(o)), key=watches.resource_version)
        kind = SERVED[request.resource]
        if call.verb == "list":
            return aiohttp.web.json_response(watches.list_body(kind, current, self.history.revision))
        record = watches.WatchRecord(call.resource, params.get("labelSelector"),
                                     params.get("resourceVersion"))
        self.watch_log.append(record)
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        bookmarks = self.bookmark_seconds if params.get("allowWatchBookmarks") == "true" else None
        stream = watches.WatchStream(self.history, self._buses[request.resource], request.resource, kind,
                                     match, record, timeout, bookmarks)
        assert request._raw_request is not None
        return await stream.serve(request._raw_request, current)

    def _serve_log(self, request: rendering.Request, ns: str) -> aiohttp.web.StreamResponse:
        name = request.name or ""
        if self.get(PODS, ns, name) is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        log = self.logs.get((ns, name))
        data = log.read() if log is not None else b""
        limit = request.params.get("limitBytes")
        if limit:
            data = data[: int(limit)]
        return aiohttp.web.Response(body=data, content_type="text/plain", charset="utf-8")


MAX_REQUEST_BODY = 3 * 1024 * 1024
"""The API server's limit on a request's body (3 MiB); aiohttp's default, 1 MiB, would answer 413
where the API server validates the object (and answers 422 for a ConfigMap over 1 MiB)."""


@dataclass
class RunningStandIn:
    """A StandIn served on a random local port from its own event loop thread."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    standin: StandIn | None = None
    url: str = ""
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> RunningStandIn:
        self._thread = threading.Thread(target=self._main, name="standin", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stand-in did not start")
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with StandIn() as standin, kmock.Server(standin) as server:
            for res in ("v1/pods", "v1/configmaps", "batch/v1/jobs"):
                standin.resources[res] = {}
            self.standin = standin
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the stand-in's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def cut_watches(self) -> int:
        """Reset every open watch connection now, as an API server restart would."""

        async def cut() -> int:
            return self.api.cut_watches()

        return self.run(cut())

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(Exception):
            self.loop.close()

    @property
    def api(self) -> StandIn:
        assert self.standin is not None
        return self.standin

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this stand-in."""
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "standin-token"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
        }
        path.write_text(json.dumps(doc))
        return path

    def leftovers(self) -> list[tuple[str, str]]:
        """(resource, name) of every object still stored: Jobs, Pods, ConfigMaps, and (issue 16)
        agent-sandbox's claims, sandboxes, warm pools and templates."""
        return [(res.plural, o["metadata"]["name"]) for (res, _, _), o in list(self.api.objects.items())
                if not o.deleted]
