"""InFlight and HandOff over the scripts: verdicts, the hand-off's rounds, sending and forgetting."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from sandq.broker.keys import Keys
from sandq.broker.scripts import HandoffScript
from sandq.broker.slots import HandedOff, HandOff, InFlight, Parked, Verdict
from tests.conftest import RedisServer, make_settings

Parts = tuple[InFlight, HandOff, list[HandedOff]]


def make_parts(redis_server: RedisServer, tmp_path: Path, max_in_flight: int) -> Parts:
    queue = f"slots-{uuid.uuid4().hex[:8]}"
    settings = make_settings(redis_server.url, tmp_path, queue=queue, max_in_flight=max_in_flight)
    client = redis.Redis.from_url(settings.redis_url)
    sent: list[HandedOff] = []
    return InFlight(settings, client), HandOff(settings, client, sent.append), sent


@pytest.fixture
def parts(redis_server: RedisServer, tmp_path: Path) -> Parts:
    return make_parts(redis_server, tmp_path, max_in_flight=1)


def parked(tenant: str) -> Parked:
    return Parked(tenant, {"code": "pass"}, f"q.{tenant}", "batch", 2)


def test_a_tenant_that_parks_after_the_read_is_served_by_the_same_hand_off(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight, handoff, sent = make_parts(redis_server, tmp_path, max_in_flight=2)
    assert [in_flight.acquire(i, "z") for i in ("x1", "x2")] == [Verdict.ACQUIRED] * 2
    assert in_flight.acquire("a1", "a", park=parked("a")) is Verdict.PARKED
    assert in_flight.acquire("b1", "b", park=parked("b")) is Verdict.PARKED
    in_flight.release("x1", "z")
    in_flight.release("x2", "z")
    reads: list[list[str]] = []
    real_read = HandoffScript.parked_tenants

    def stale_first(script: HandoffScript) -> list[str]:
        reads.append(["a"] if not reads else real_read(script))  # the first read predates b's parking
        return reads[-1]

    monkeypatch.setattr(HandoffScript, "parked_tenants", stale_first)
    assert handoff.hand_off() == 2
    assert reads == [["a"], ["b"]]
    assert [(h.id, h.entry) for h in sent] == [("a1", parked("a")), ("b1", parked("b"))]


def test_with_nothing_parked_no_script_runs(parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    _, handoff, sent = parts
    monkeypatch.setattr(HandoffScript, "__call__", lambda *_, **__: pytest.fail("the script ran"))
    assert handoff.hand_off() == 0 and sent == []


def test_a_hand_off_is_sent_then_forgotten(parts: Parts) -> None:
    in_flight, handoff, sent = parts
    keys = Keys(in_flight.settings.queue)
    assert in_flight.acquire("x", "z") is Verdict.ACQUIRED
    assert in_flight.acquire("p", "t", park=parked("t")) is Verdict.PARKED
    in_flight.release("x", "z")
    assert handoff.hand_off() == 1
    assert handoff.hand_off() == 0  # only one slot
    (handed,) = sent
    client = in_flight.redis
    assert not client.zcard(keys.handing) and not client.hlen(keys.entries)  # sent: nothing to send again
    assert client.hget(keys.claims, "p") == handed.token.encode()
    assert in_flight.acquire("p", "t", handed.token) is Verdict.ACQUIRED


def test_unparking_reads_the_tenant_and_sends_the_execution_once(
    parts: Parts,
) -> None:
    in_flight, handoff, sent = parts
    assert in_flight.acquire("x", "z") is Verdict.ACQUIRED
    assert in_flight.acquire("p", "t", park=parked("t")) is Verdict.PARKED
    assert handoff.unpark_cancelled("p") is True
    assert handoff.unpark_cancelled("p") is False
    assert handoff.unpark_cancelled("never-parked") is False
    assert [(h.id, h.entry.retries) for h in sent] == [("p", 2)]
