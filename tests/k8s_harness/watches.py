"""What kmock's watches and lists lack, as the API server does it.

kmock 0.8 replays every stored object as ADDED on each watch and ignores ``resourceVersion``,
``timeoutSeconds``, ``labelSelector``, ``fieldSelector`` and ``allowWatchBookmarks``; its lists
answer ``resourceVersion: "..."``. Here every event written to kmock's buses gets the next
resourceVersion of one counter (etcd's revision) and is kept in a history of limited length;
``compact`` drops it as etcd's compaction does. A list answers the current resourceVersion and
applies the selectors; a watch from a resourceVersion replays what happened after it, or answers
an ERROR event with 410 Gone once that is compacted away; it filters by the selectors, sends
BOOKMARK events, and ends after ``timeoutSeconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
from kmock._internal import aiobus

Event = dict[str, Any]
Match = Callable[[dict[str, Any]], bool]

HISTORY_LIMIT = 10_000
"""Events kept per resource (the watch cache and etcd keep a window too); older ones are compacted."""


def label_match(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A label selector (``a=b,c!=d,e,!f``, ``==`` too) as a test on an object's labels."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in (t.strip() for t in (selector or "").split(",")):
        if not term:
            continue
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda labels, k=term[1:]: k not in labels)
        else:
            tests.append(lambda labels, k=term: k in labels)
    return lambda labels: all(test(labels) for test in tests)


def object_match(namespace: str | None, params: dict[str, str]) -> Match:
    """Whether an object is in ``namespace`` and matches the request's label and field selectors."""
    labels = label_match(params.get("labelSelector"))
    fields = dict(
        term.split("=", 1) for term in (params.get("fieldSelector") or "").split(",") if "=" in term
    )

    def match(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if namespace and meta.get("namespace") != namespace:
            return False
        if any(str(meta.get(key.removeprefix("metadata."))) != value for key, value in fields.items()):
            return False
        return labels(meta.get("labels") or {})

    return match


def resource_version(event: Event) -> int:
    return int(((event.get("object") or {}).get("metadata") or {}).get("resourceVersion") or 0)


@dataclass
class WatchRecord:
    """One watch served: what it asked for, what it was sent, and how it ended."""

    resource: str
    label_selector: str | None
    since: str | None
    sent: Counter[str] = field(default_factory=Counter)
    names: set[str] = field(default_factory=set)
    ended: str = ""
    """``timeout``, ``gone`` (410), or ``closed`` (the client or a cut)."""


class History:
    """The revision counter, and each resource's recent events (what a watch can resume from)."""

    def __init__(self, limit: int = HISTORY_LIMIT) -> None:
        self.revision = 0
        self.limit = limit
        self.events: dict[Any, deque[tuple[int, Event]]] = {}
        self.compacted: dict[Any, int] = {}
        """Per resource, the newest revision whose events are gone: a watch must start at or after it."""

    def record(self, resource: Any, event: Event) -> None:
        """Give ``event`` and its object, which kmock stores, the next revision; keep the event.

        The event gets a copy of the object: kmock's events share their metadata with the stored
        version, which the next event (a deletion) stamps again.
        """
        self.revision += 1
        obj = event.get("object") or {}
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
        event["object"] = copy.deepcopy(obj)
        kept = self.events.setdefault(resource, deque())
        kept.append((self.revision, event))
        while len(kept) > self.limit:
            self.compacted[resource] = kept.popleft()[0]

    def compact(self) -> None:
        """Forget every event so far (etcd's compaction): older resourceVersions answer 410 Gone."""
        for resource, kept in self.events.items():
            kept.clear()
            self.compacted[resource] = self.revision

    def since(self, resource: Any, revision: int) -> list[Event] | None:
        """The events after ``revision``, or None if some of them are compacted away."""
        if revision < self.compacted.get(resource, 0):
            return None
        return [event for rv, event in self.events.get(resource, ()) if rv > revision]


class RecordingBus(aiobus.Bus[Any]):
    """kmock's event bus of one resource, whose events are numbered and kept in ``History``."""

    def __init__(self, history: History, resource: Any) -> None:
        super().__init__()
        self.history = history
        self.resource = resource

    async def put(self, *items: Any) -> None:
        for item in items:
            if isinstance(item, dict):
                self.history.record(self.resource, item)
        await super().put(*items)


class Buses(dict[Any, RecordingBus]):
    """kmock's buses by resource, each recording into one ``History``."""

    def __init__(self, history: History) -> None:
        super().__init__()
        self.history = history

    def __missing__(self, resource: Any) -> RecordingBus:
        bus = self[resource] = RecordingBus(self.history, resource)
        return bus


def list_body(kind: str, items: Iterable[dict[str, Any]], revision: int) -> dict[str, Any]:
    return {"kind": f"{kind}List", "apiVersion": "v1", "metadata": {"resourceVersion": str(revision)},
            "items": list(items)}


GONE_EVENT = {"type": "ERROR", "object": {
    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 410,
    "reason": "Expired", "message": "too old resource version"}}


@dataclass
class WatchStream:
    """One watch being served: a backlog, then live events, bookmarks, and the server-side timeout."""

    history: History
    bus: aiobus.Bus[Any]
    resource: Any
    kind: str
    match: Match
    record: WatchRecord
    timeout: float | None
    bookmark_seconds: float | None

    async def serve(
        self, raw: aiohttp.web.BaseRequest, current: list[dict[str, Any]]
    ) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        mark = await self.bus.mark()

        async def pump() -> None:
            async for event in self.bus.stream(since=mark):
                queue.put_nowait(event)

        task = asyncio.get_running_loop().create_task(pump())
        try:
            await self._serve(response, queue, current)
        except (ConnectionError, RuntimeError):
            self.record.ended = self.record.ended or "closed"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ValueError):
                await task
                await self.bus.unmark(mark)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    async def _send(self, response: aiohttp.web.StreamResponse, event: Event) -> None:
        await response.write(json.dumps(event).encode() + b"\n")
        self.record.sent[str(event.get("type"))] += 1
        name = ((event.get("object") or {}).get("metadata") or {}).get("name")
        if name:
            self.record.names.add(str(name))

    async def _serve(self, response: aiohttp.web.StreamResponse, queue: asyncio.Queue[Any],
                     current: list[dict[str, Any]]) -> None:
        since = self.record.since
        if since and since != "0":
            backlog = self.history.since(self.resource, int(since))
            if backlog is None:
                await self._send(response, GONE_EVENT)
                self.record.ended = "gone"
                return
            last = int(since)
        else:
            backlog = [{"type": "ADDED", "object": obj} for obj in current]
            last = self.history.revision
        for event in backlog:
            if self.match(event.get("object") or {}):
                await self._send(response, event)
        last = max([last, *map(resource_version, backlog)])
        loop = asyncio.get_running_loop()
        end = None if self.timeout is None else loop.time() + self.timeout
        bookmark_at = None if self.bookmark_seconds is None else loop.time() + self.bookmark_seconds
        while True:
            wakes = [t for t in (end, bookmark_at) if t is not None]
            wait = max(min(wakes) - loop.time(), 0) if wakes else None
            try:
                event = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if end is not None and loop.time() >= end:
                    self.record.ended = "timeout"
                    return
                assert self.bookmark_seconds is not None
                bookmark_at = loop.time() + self.bookmark_seconds
                await self._send(response, {"type": "BOOKMARK", "object": {
                    "kind": self.kind, "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.history.revision)}}})
                continue
            if resource_version(event) > last and self.match(event.get("object") or {}):
                await self._send(response, event)
            last = max(last, resource_version(event))
