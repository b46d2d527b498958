"""The one shared watch per worker process: Jobs and Pods managed by sandq, cached in memory.

Two long-lived streams (Jobs, Pods) serve every execution of the process, so
the API load does not grow with concurrency (the warm path adds a third, of
SandboxClaims). A stream resumes from its last resourceVersion after a drop
or a timeout, and relists after ``410 Gone``.
Selectors are sent to the server and applied again client-side.

Waiting is cheap: the cache keeps only what classification reads (no pod
specs, no managedFields), indexes pods by their Job, and wakes only the
waiters of the Job an event is about, so hundreds of executions can wait
in one process. It also keeps what a waiter could miss between two looks: a
pod whose container was seen started stays marked so (``classify.RAN``), and a
pod deleted while someone waits on its Job stays, in its last state, marked
``classify.GONE`` until nobody does (on Kubernetes 1.31+ the pods that a Job's
deadline stops are deleted at once).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch import watch as _watch

from sandq.sandbox.kubernetes import classify
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.classify import Obj
from sandq.sandbox.kubernetes.manifests import MANAGED_BY, MANAGED_BY_VALUE, SELECTOR

log = logging.getLogger(__name__)

_iter_lines: Callable[[Any], Any] = _watch.iter_resp_lines

GONE = 410
_MAX_BACKOFF = 10.0


def managed(obj: Obj) -> bool:
    """Whether ``obj`` carries sandq's managed-by label (client-side selector)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY) == MANAGED_BY_VALUE)


def _owner(obj: Obj) -> tuple[str, str] | None:
    """(name, uid) of the Job that owns a pod, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("uid"):
            return str(ref.get("name") or ""), str(ref["uid"])
    return None


def slim(obj: Obj, before: Obj | None = None) -> Obj:
    """``obj`` without what no waiter reads (its spec, its managedFields), marked ``classify.RAN`` if
    its container started, now or in the state ``before`` it (of the same uid)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    kept: Obj = {"metadata": meta, "status": obj.get("status") or {}}
    same = before is not None and (before.get("metadata") or {}).get("uid") == meta.get("uid")
    if classify.started(kept) or (same and before is not None and before.get(classify.RAN)):
        kept[classify.RAN] = True
    return kept


class SharedWatch:
    """A cache of sandq's Jobs and Pods (and, once the warm path runs, SandboxClaims), kept current
    by one watch per kind."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._objects: dict[str, dict[str, Obj]] = {"jobs": {}, "pods": {}}
        self._pods_by_owner: dict[str, dict[str, Obj]] = {}
        self._listeners: dict[str, set[threading.Event]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: dict[str, Any] = {}
        self._synced: dict[str, threading.Event] = {}

    def start(self) -> None:
        """Start the streams of Jobs and Pods (idempotent)."""
        self.add("jobs", self.api.batch.list_namespaced_job)
        self.add("pods", self.api.core.list_namespaced_pod)

    def add(self, kind: str, fn: Callable[..., Any]) -> None:
        """Start the stream of ``kind``, listed by ``fn(namespace, **options)``, unless it runs."""
        with self._cond:
            if kind in self._synced:
                return
            self._objects.setdefault(kind, {})
            self._synced[kind] = threading.Event()
            ns = self.api.settings.namespace
            thread = threading.Thread(
                target=self._run, args=(kind, fn, ns), name=f"sandq-watch-{kind}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every kind was listed once."""
        end = time.monotonic() + timeout
        return all(e.wait(max(end - time.monotonic(), 0)) for e in list(self._synced.values()))

    def close(self) -> None:
        """Stop every stream."""
        self._stop.set()
        self.poke()
        for resp in list(self._responses.values()):
            _shutdown(resp)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    # -- cache reads -------------------------------------------------------------------

    def snapshot(self, job_name: str, job_uid: str) -> tuple[Obj | None, list[Obj]]:
        """The Job (if its uid is ``job_uid``) and its pods, newest first."""
        with self._cond:
            job = self._objects["jobs"].get(job_name)
            if job is not None and (job.get("metadata") or {}).get("uid") != job_uid:
                job = None
            pods = list(self._pods_by_owner.get(job_uid, {}).values())
        pods.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""), reverse=True)
        return job, pods

    def get(self, kind: str, name: str) -> Obj | None:
        """The cached object ``name`` of ``kind`` (as the watch slims it), or None."""
        with self._cond:
            return self._objects.get(kind, {}).get(name)

    @contextmanager
    def listen(self, job_names: Iterable[str]) -> Iterator[threading.Event]:
        """An Event set whenever one of these Jobs or their pods change (or on ``poke``); a name
        that no Job has is woken by the object of that name (a SandboxClaim, a pod without a Job).

        Clear it before reading ``snapshot``, then wait on it: no change is missed.
        """
        event = threading.Event()
        names = list(job_names)
        with self._cond:
            for name in names:
                self._listeners.setdefault(name, set()).add(event)
        try:
            yield event
        finally:
            with self._cond:
                for name in names:
                    listeners = self._listeners.get(name)
                    if listeners is not None:
                        listeners.discard(event)
                        if not listeners:
                            del self._listeners[name]
                            self._forget_gone(name)

    def _forget_gone(self, job_name: str) -> None:
        """Drop the deleted pods kept for the waiters of ``job_name``; hold ``_cond``."""
        for owner_uid, pods in list(self._pods_by_owner.items()):
            for name, pod in list(pods.items()):
                if pod.get(classify.GONE) and (_owner(pod) or ("", ""))[0] == job_name:
                    del pods[name]
            if not pods:
                del self._pods_by_owner[owner_uid]

    def poke(self) -> None:
        """Wake every waiter (e.g. on cancellation)."""
        with self._cond:
            self._notify(None)

    # -- cache writes ------------------------------------------------------------------

    def _notify(self, job_name: str | None) -> None:
        """Wake the listeners of ``job_name`` (of every Job if None); hold ``_cond``."""
        if job_name is None:
            groups: Iterable[set[threading.Event]] = list(self._listeners.values())
        else:
            groups = [self._listeners.get(job_name, set())]
        for listeners in groups:
            for event in listeners:
                event.set()

    def _replace(self, kind: str, items: list[Obj]) -> None:
        with self._cond:
            old = self._objects[kind]
            self._objects[kind] = {
                o["metadata"]["name"]: slim(o, old.get(o["metadata"]["name"])) for o in items if managed(o)
            }
            if kind == "pods":
                kept = (p for pods in self._pods_by_owner.values() for p in pods.values())
                gone = [p for p in kept if p.get(classify.GONE)]
                self._pods_by_owner = {}
                for pod in [*gone, *self._objects["pods"].values()]:
                    owner = _owner(pod)
                    if owner is not None:
                        self._pods_by_owner.setdefault(owner[1], {})[pod["metadata"]["name"]] = pod
            self._notify(None)

    def _apply(self, kind: str, event_type: str, obj: Obj) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name or not managed(obj):
            return
        owner = _owner(obj) if kind == "pods" else None
        with self._cond:
            obj = slim(obj, self._objects[kind].get(name))
            if event_type == "DELETED":
                self._objects[kind].pop(name, None)
            else:
                self._objects[kind][name] = obj
            if owner is not None:
                pods = self._pods_by_owner.setdefault(owner[1], {})
                if event_type != "DELETED":
                    pods[name] = obj
                elif owner[0] in self._listeners:  # a waiter may not have seen its end yet
                    pods[name] = {**obj, classify.GONE: True}
                else:
                    pods.pop(name, None)
                    if not pods:
                        del self._pods_by_owner[owner[1]]
            self._notify(owner[0] if owner is not None else name)

    # -- the streams ---------------------------------------------------------------------

    def _list(self, kind: str, fn: Callable[..., Any], ns: str) -> str | None:
        resp = self.api.call(f"list {kind}", fn, ns, label_selector=SELECTOR, _preload_content=False)
        try:
            doc = json.loads(resp.data)
        finally:
            resp.release_conn()
        self._replace(kind, list(doc.get("items") or []))
        self._synced[kind].set()
        rv = (doc.get("metadata") or {}).get("resourceVersion")
        return str(rv) if rv else None

    def _run(self, kind: str, fn: Callable[..., Any], ns: str) -> None:
        settings = self.api.settings
        rv: str | None = None
        listed = False
        backoff = settings.api_backoff_seconds
        while not self._stop.is_set():
            try:
                if not listed:
                    rv = self._list(kind, fn, ns)
                    listed = True
                resp = self.api.call(
                    f"watch {kind}", fn, ns, label_selector=SELECTOR, watch=True, resource_version=rv,
                    allow_watch_bookmarks=True, timeout_seconds=settings.watch_timeout_seconds,
                    _preload_content=False,
                    _request_timeout=(settings.api_timeout_seconds, settings.watch_timeout_seconds + 10),
                )
                self._responses[kind] = resp
                try:
                    rv, gone = self._consume(kind, resp, rv)
                finally:
                    self._responses.pop(kind, None)
                    resp.release_conn()
                if gone:
                    listed = False
                backoff = settings.api_backoff_seconds
            except Exception as error:
                if self._stop.is_set():
                    break
                if isinstance(error, ApiException) and error.status == GONE:
                    listed = False
                log.info("watch of %s interrupted (%s: %s); resuming", kind, type(error).__name__, error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def _consume(self, kind: str, resp: Any, rv: str | None) -> tuple[str | None, bool]:
        """Apply the events of one stream; return the last resourceVersion and whether it is gone."""
        for line in _iter_lines(resp):
            if self._stop.is_set():
                break
            if not line:
                continue
            event = json.loads(line)
            event_type = event.get("type")
            obj = event.get("object") or {}
            if event_type == "ERROR":
                if obj.get("code") == GONE:
                    return None, True
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = str(new_rv)
            if event_type in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(kind, str(event_type), obj)
        return rv, False


def _shutdown(resp: Any) -> None:
    try:
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            import socket  # noqa: PLC0415

            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
