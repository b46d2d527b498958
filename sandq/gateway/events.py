"""An execution's Server-Sent Events: its output as it is written, then its result.

Events: ``stdout`` and ``stderr`` (``data``: the text, as a JSON string; ``id``: the Redis stream
entry id, which ``Last-Event-ID`` resumes after), then one ``result`` (``data``: the
``ExecutionResult``). A reader that resumes from further back than the stream still keeps (it is
trimmed past ``MAX_ENTRIES``) first gets a ``gap`` event. An execution submitted without
``stream_output`` has no output events: its stream is the ``result`` alone.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import redis
from fastapi.sse import ServerSentEvent

from sandq.broker.keys import Keys
from sandq.broker.output import Cursor, OutputChunk
from sandq.client.waiting import ResultTimeout
from sandq.contract import ExecutionResult
from sandq.gateway.metrics import EVENT_STREAMS
from sandq.gateway.records import ExecutionRecord
from sandq.gateway.state import Gateway

BLOCK_MS = 5000
"""Longest block on the output stream before checking whether the result came without an end entry."""
ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
"""A Redis stream entry id, as ``Last-Event-ID`` must be."""


def _entry(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _event(chunk: OutputChunk) -> ServerSentEvent:
    return ServerSentEvent(event=chunk.stream, data=chunk.data, id=chunk.id)


async def _trimmed_past(state: Gateway, key: str, after: str) -> bool:
    """True if entries may have been trimmed away after ``after``: the stream lost its oldest
    entries, and ``after`` comes before the first it keeps."""
    try:
        info = await state.redis.xinfo_stream(key)
    except redis.ResponseError:  # no stream (yet)
        return False
    first = info.get("first-entry")
    if first is None or int(info.get("entries-added", 0)) <= int(info["length"]):
        return False
    kept = first[0].decode() if isinstance(first[0], bytes) else str(first[0])
    return _entry(after) < _entry(kept)


async def _output(state: Gateway, execution_id: str, cursor: Cursor) -> AsyncIterator[ServerSentEvent]:
    key = Keys(state.settings.queue).output(execution_id)
    if await _trimmed_past(state, key, cursor.after):
        yield ServerSentEvent(event="gap", data={"after": cursor.after})
    while not cursor.ended:
        chunks = cursor.take(Cursor.entries(await state.redis.xread({key: cursor.after}, block=BLOCK_MS)))
        for chunk in chunks:
            yield _event(chunk)
        if not chunks and not cursor.ended and await state.waiter.stored(execution_id):
            for chunk in cursor.take(await state.redis.xrange(key, min=f"({cursor.after}")):
                yield _event(chunk)
            return


async def _result(state: Gateway, execution_id: str) -> ExecutionResult:
    while True:  # as long as the reader stays (a gone reader cancels this)
        try:
            return await state.waiter.wait(execution_id, 60)
        except ResultTimeout:
            continue


async def execution_events(
    state: Gateway, execution_id: str, record: ExecutionRecord, after: str
) -> AsyncIterator[ServerSentEvent]:
    """The events of one execution, from after entry ``after``."""
    EVENT_STREAMS.inc()
    try:
        cursor = Cursor(after)
        if record.stream_output:
            async for event in _output(state, execution_id, cursor):
                yield event
        result = await _result(state, execution_id)
        yield ServerSentEvent(event="result", data=result.model_dump(mode="json"), id=cursor.after)
    finally:
        EVENT_STREAMS.dec()
