"""The in-flight semaphore: caps across workers, fair shares, and leases of dead workers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from sandq.broker.admission import Admission
from sandq.broker.keys import Keys
from sandq.broker.routing import Priority
from sandq.broker.slots import HandedOff, HandOff, InFlight, Parked, Verdict
from sandq.client.client import Client
from sandq.contract import Status
from sandq.settings import Settings
from tests.integration.queue.conftest import WAIT, SettingsFactory, WorkerFactory, raw_redis


def max_overlap(runs: list[dict[str, float]]) -> int:
    current = peak = 0
    for _, step in sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs]):
        current += step
        peak = max(peak, current)
    return peak


def test_acquire_never_exceeds_the_caps_under_threads(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_in_flight=7, max_in_flight_per_tenant=5)
    sem = InFlight(settings, raw_redis(settings))
    verdicts: list[Verdict] = []

    def take(worker: int) -> None:
        for i in range(20):
            tenant = "a" if i % 2 else "b"
            verdicts.append(sem.acquire(f"{worker}-{i}", tenant))

    threads = [threading.Thread(target=take, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts.count(Verdict.ACQUIRED) == 7
    assert verdicts.count(Verdict.REFUSED) == 6 * 20 - 7
    keys = Keys(settings.queue)
    raw = raw_redis(settings)
    assert raw.zcard(keys.in_flight) == 7
    assert max(raw.zcard(keys.in_flight_for("a")), raw.zcard(keys.in_flight_for("b"))) <= 5


def entry(tenant: str, priority: Priority = "batch") -> Parked:
    return Parked(tenant, {"code": "pass"}, "q", priority, 0)


class Dispatch:
    """An ``InFlight`` and its ``HandOff``, recording what the hand-off sends."""

    def __init__(self, settings: Settings, hand_off_on_release: bool = True) -> None:
        raw = raw_redis(settings)
        self.sent: list[HandedOff] = []
        self.handoff = HandOff(settings, raw, self.sent.append)
        on_release = self.handoff.poke if hand_off_on_release else (lambda: None)
        self.sem = InFlight(settings, raw, on_release=on_release)

    def park(self, execution_id: str, tenant: str, priority: Priority = "batch") -> Verdict:
        return self.sem.acquire(execution_id, tenant, park=entry(tenant, priority))

    @property
    def sent_ids(self) -> list[str]:
        return [h.id for h in self.sent]


def test_a_freed_slot_goes_to_the_tenant_running_the_fewest(queue_settings: SettingsFactory) -> None:
    d = Dispatch(queue_settings(max_in_flight=2))
    assert d.park("a1", "a") is Verdict.ACQUIRED
    assert d.park("a2", "a") is Verdict.ACQUIRED
    assert [d.park(i, t) for i, t in (("a3", "a"), ("a4", "a"), ("b1", "b"))] == [Verdict.PARKED] * 3
    d.sem.release("a1", "a")
    assert d.sent_ids == ["b1"]  # b runs nothing, a runs one: b first, though a3 parked earlier
    d.sem.release("a2", "a")
    assert d.sent_ids == ["b1", "a3"]  # a's line keeps its order
    raw = raw_redis(d.sem.settings)
    keys = Keys(d.sem.settings.queue)
    assert raw.zscore(keys.in_flight, "b1") and raw.zscore(keys.in_flight_for("b"), "b1")  # it holds its slot
    assert raw.smembers(keys.parked) == {b"a4"}


def test_a_tenant_above_its_share_leaves_the_reserve_to_others(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_in_flight=10, fair_reserve=0.2)  # 2 reserved slots
    d = Dispatch(settings)
    admission = Admission(settings, raw_redis(settings))
    admission.admit("a-first", "a")
    taken = [d.park(f"a{i}", "a") for i in range(10)]
    assert taken == [Verdict.ACQUIRED] * 10  # alone, a may use every slot
    for i in range(3):
        d.sem.release(f"a{i}", "a")  # the hand-off has nothing parked to give them to
    admission.admit("b-first", "b")  # b is active now: a (7 running, share 5) leaves 2 free
    assert d.park("a10", "a") is Verdict.ACQUIRED  # 3 free > 2 reserved
    assert d.park("a11", "a") is Verdict.PARKED
    assert d.park("b1", "b") is Verdict.ACQUIRED  # below its share: no wait for a slot
    assert d.park("b2", "b") is Verdict.ACQUIRED
    d.sem.release("a3", "a")
    assert d.sent_ids == []  # one free slot, within the reserve: a11 waits
    d.sem.release("b1", "b")
    d.sem.release("b2", "b")
    assert d.sent_ids == ["a11"]  # three free: one more for a


def test_interactive_parked_goes_before_batch(queue_settings: SettingsFactory) -> None:
    d = Dispatch(queue_settings(max_in_flight=1))
    assert d.park("x", "t") is Verdict.ACQUIRED
    assert d.park("y", "t", "batch") is Verdict.PARKED
    assert d.park("i", "u", "interactive") is Verdict.PARKED
    d.sem.release("x", "t")
    assert d.sent_ids == ["i"]
    assert d.sent[0].entry == entry("u", "interactive")


def test_no_new_execution_overtakes_a_parked_one(queue_settings: SettingsFactory) -> None:
    d = Dispatch(queue_settings(max_in_flight=1), hand_off_on_release=False)
    assert d.park("x", "t") is Verdict.ACQUIRED
    assert d.park("p", "t") is Verdict.PARKED
    d.sem.release("x", "t")  # the slot is free, but p is first in line
    assert d.park("late", "t") is Verdict.PARKED
    assert d.handoff.hand_off() == 1
    assert d.sent_ids == ["p"]


def test_exactly_one_copy_of_a_parked_execution_runs(queue_settings: SettingsFactory) -> None:
    d = Dispatch(queue_settings(max_in_flight=1), hand_off_on_release=False)
    assert d.park("x", "t") is Verdict.ACQUIRED
    assert d.park("p", "t") is Verdict.PARKED
    assert d.park("p", "t") is Verdict.DUPLICATE  # its first message, redelivered: the parked copy rules
    d.sem.release("x", "t")
    d.handoff.hand_off()
    (handed,) = d.sent
    assert d.sem.acquire("p", "t") is Verdict.DUPLICATE  # the first message, redelivered late
    assert d.sem.acquire("p", "t", handed.token) is Verdict.ACQUIRED
    assert d.sem.acquire("p", "t", "another-token") is Verdict.DUPLICATE
    assert d.sem.acquire("p", "t", handed.token) is Verdict.ACQUIRED  # its own redelivery runs


def test_a_hand_off_whose_sender_died_is_sent_again(queue_settings: SettingsFactory) -> None:
    settings = queue_settings(max_in_flight=1, lease_seconds=1)
    raw = raw_redis(settings)
    sends: list[HandedOff] = []

    def dying(handed: HandedOff) -> None:
        sends.append(handed)
        if len(sends) == 1:
            raise ConnectionError("the worker died before sending")

    handoff = HandOff(settings, raw, dying)
    sem = InFlight(settings, raw)
    assert sem.acquire("x", "t") is Verdict.ACQUIRED
    assert sem.acquire("p", "t", park=entry("t")) is Verdict.PARKED
    sem.release("x", "t")
    with pytest.raises(ConnectionError):
        handoff.hand_off()
    assert handoff.recover() == 0  # not stale yet
    time.sleep(1.2)
    assert handoff.recover() == 1
    first, again = sends
    assert (again.id, again.entry) == (first.id, first.entry) and again.token != first.token
    assert sem.acquire("p", "t", again.token) is Verdict.ACQUIRED
    assert sem.acquire("p", "t", first.token) is Verdict.DUPLICATE
    assert handoff.recover() == 0 and not raw.hlen(Keys(settings.queue).entries)


def test_a_cancelled_parked_execution_is_sent_without_a_slot(queue_settings: SettingsFactory) -> None:
    d = Dispatch(queue_settings(max_in_flight=1))
    assert d.park("x", "t") is Verdict.ACQUIRED
    assert d.park("p", "t") is Verdict.PARKED
    assert d.handoff.unpark_cancelled("p")
    assert not d.handoff.unpark_cancelled("p")
    assert d.sent_ids == ["p"]
    raw = raw_redis(d.sem.settings)
    keys = Keys(d.sem.settings.queue)
    assert raw.zcard(keys.in_flight) == 1 and not raw.zscore(keys.in_flight, "p")
    assert not raw.smembers(keys.parked) and not raw.zcard(keys.parked_tenants)


def test_global_cap_holds_across_workers(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(max_in_flight=3, simulated_run_seconds=0.1)
    start_worker(settings, concurrency=4)
    start_worker(settings, concurrency=4)
    client = make_client(settings)
    handles = [client.submit({"code": "pass", "tenant": f"t{i % 3}"}) for i in range(30)]
    results = [h.result(timeout=WAIT) for h in handles]
    assert {r.status for r in results} == {Status.SUCCEEDED}
    runs = [json.loads(r) for r in raw_redis(settings).lrange(Keys(settings.queue).simulated_runs, 0, -1)]
    assert len(runs) == 30 and max(Counter(r["id"] for r in runs).values()) == 1
    assert max_overlap(runs) <= 3


def test_a_killed_workers_slots_come_back(
    queue_settings: SettingsFactory, start_worker: WorkerFactory, make_client: Callable[[Settings], Client]
) -> None:
    settings = queue_settings(max_in_flight=2, lease_seconds=2)
    doomed = start_worker(settings, concurrency=2)
    client = make_client(settings)
    for _ in range(2):
        client.submit({"code": "pass", "labels": {"simulated_seconds": "600"}})
    keys = Keys(settings.queue)
    raw = raw_redis(settings)
    deadline = time.monotonic() + WAIT
    while raw.zcard(keys.in_flight) < 2:
        assert time.monotonic() < deadline, "the long runs never started"
        time.sleep(0.1)
    os.kill(doomed.proc.pid, signal.SIGKILL)
    doomed.proc.wait()
    start_worker(settings, concurrency=2)
    result = client.run({"code": "pass"}, timeout=WAIT)  # runs only once the dead worker's leases expired
    assert result.status is Status.SUCCEEDED
    assert not raw.zscore(keys.in_flight, result.id)
