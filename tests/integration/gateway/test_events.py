"""Resuming an event stream: a reader from further back than the stream keeps is told of the gap."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import redis.asyncio as aioredis

from sandq.gateway.events import ENTRY_ID, _trimmed_past


async def test_a_gap_is_seen_only_behind_trimmed_entries(aredis: aioredis.Redis) -> None:
    key = f"sandq:test:output:{uuid.uuid4().hex}"
    state: Any = SimpleNamespace(redis=aredis)
    assert not await _trimmed_past(state, key, "0-0"), "no stream yet: nothing was lost"
    ids = []
    for n in range(30):
        added = await aredis.xadd(key, {"stream": "o", "data": str(n)}, maxlen=10, approximate=False)
        ids.append(added.decode())
    kept = [entry_id.decode() for entry_id, _ in await aredis.xrange(key)]
    assert kept == ids[-10:]
    assert await _trimmed_past(state, key, "0-0")
    assert await _trimmed_past(state, key, ids[5])
    assert not await _trimmed_past(state, key, ids[20]), "the first kept: nothing after it is lost"
    assert not await _trimmed_past(state, key, ids[-1])
    untrimmed = f"{key}:whole"
    first = (await aredis.xadd(untrimmed, {"stream": "o", "data": "x"})).decode()
    await aredis.xadd(untrimmed, {"stream": "o", "data": "y"})
    assert not await _trimmed_past(state, untrimmed, "0-0")
    assert not await _trimmed_past(state, untrimmed, first)


def test_only_entry_ids_are_resume_points() -> None:
    assert ENTRY_ID.fullmatch("1764471000123-0") and ENTRY_ID.fullmatch("0-0")
    for bad in ("x", "1-", "-1", "1-2-3", "1 -2", "1764471000123-0\n"):
        assert not ENTRY_ID.fullmatch(bad), bad
