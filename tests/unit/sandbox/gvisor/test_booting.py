"""Boot slots: a bound on sandboxes booting at once, handed out interactive first, then in arrival order."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from sandq.sandbox.gvisor.booting import BootSlots, Rank, cores, default_limit


def waiter(
    slots: BootSlots, rank: Rank, got: list[str], name: str, releases: list[Callable[[], None]] | None = None
) -> threading.Thread:
    """A thread that waits for a slot at ``rank``, notes ``name`` once it has it, and keeps its release."""

    def run() -> None:
        release = slots.acquire(rank)
        if releases is not None:
            releases.append(release)
        got.append(name)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def waiting(slots: BootSlots, count: int) -> None:
    until(lambda: len(slots._waiting) == count)


def test_no_more_than_the_limit_boot_at_once_and_a_release_lets_the_next_in() -> None:
    slots = BootSlots(2)
    first, second = slots.acquire(Rank.BATCH), slots.acquire(Rank.BATCH)
    assert slots.booting() == 2
    got: list[str] = []
    third = waiter(slots, Rank.BATCH, got, "third")
    waiting(slots, 1)
    assert got == []
    first()
    third.join(timeout=10)
    assert got == ["third"]
    assert slots.booting() == 2
    second()
    assert slots.booting() == 1


def test_interactive_requests_go_ahead_of_batch_ones_each_in_arrival_order() -> None:
    slots = BootSlots(1)
    releases = [slots.acquire(Rank.BATCH)]
    got: list[str] = []
    order = (("batch-1", Rank.BATCH), ("interactive-1", Rank.INTERACTIVE),
             ("batch-2", Rank.BATCH), ("interactive-2", Rank.INTERACTIVE))
    for at, (name, rank) in enumerate(order):
        waiter(slots, rank, got, name, releases)
        waiting(slots, at + 1)
    for served in range(1, 5):
        releases.pop()()  # the one booting is ready: the next gets its slot
        until(lambda: len(got) == served)
        assert slots.booting() == 1
    assert got == ["interactive-1", "interactive-2", "batch-1", "batch-2"]


def test_a_boot_ahead_of_demand_takes_only_a_slot_nobody_waits_for() -> None:
    slots = BootSlots(1)
    held = slots.acquire(Rank.BATCH)
    assert slots.try_acquire(Rank.AHEAD) is None  # none free
    got: list[str] = []
    releases: list[Callable[[], None]] = []
    waiter(slots, Rank.BATCH, got, "batch", releases)
    waiting(slots, 1)
    assert slots.try_acquire(Rank.AHEAD) is None
    held()
    until(lambda: got == ["batch"])
    assert slots.try_acquire(Rank.AHEAD) is None  # the batch request has it
    releases[0]()
    release = slots.try_acquire(Rank.AHEAD)
    assert release is not None
    assert slots.booting() == 1


def test_a_boot_ahead_of_demand_starts_only_while_fewer_than_its_own_limit_boot() -> None:
    slots = BootSlots(4, ahead=2)
    first = slots.try_acquire(Rank.AHEAD)
    second = slots.try_acquire(Rank.AHEAD)
    assert first is not None and second is not None
    assert slots.try_acquire(Rank.AHEAD) is None  # two boot: no third ahead of demand
    batch, interactive = slots.try_acquire(Rank.BATCH), slots.try_acquire(Rank.INTERACTIVE)
    assert batch is not None and interactive is not None  # requests may use every slot
    assert slots.booting() == 4
    first()
    second()
    assert slots.try_acquire(Rank.AHEAD) is None  # the requests' two boots count too
    batch()
    assert slots.try_acquire(Rank.AHEAD) is not None


def test_pacing_changes_how_many_boot_ahead_of_demand() -> None:
    slots = BootSlots(4, ahead=1)
    first = slots.try_acquire(Rank.AHEAD)
    assert first is not None
    assert slots.try_acquire(Rank.AHEAD) is None
    slots.pace(2)
    assert slots.try_acquire(Rank.AHEAD) is not None
    assert slots.try_acquire(Rank.AHEAD) is None
    slots.pace(1)
    first()
    assert slots.try_acquire(Rank.AHEAD) is None  # one still boots ahead of demand
    assert slots.try_acquire(Rank.BATCH) is not None  # requests are not paced


def test_slots_held_for_the_interactive_reserve_are_not_given_to_batch_work() -> None:
    slots = BootSlots(3)
    slots.hold(5)  # all but one at most
    batch = slots.try_acquire(Rank.BATCH)
    assert batch is not None
    assert slots.try_acquire(Rank.BATCH) is None
    assert slots.try_acquire(Rank.AHEAD) is None
    refill = slots.try_acquire(Rank.INTERACTIVE)
    assert refill is not None
    got: list[str] = []
    waiter(slots, Rank.BATCH, got, "batch")
    waiting(slots, 1)
    slots.hold(0)  # the reserve is full again: batch work may have every slot
    until(lambda: got == ["batch"])
    assert slots.booting() == 3


def test_a_release_counts_once_and_tells_whoever_waits_for_a_free_slot() -> None:
    freed: list[int] = []
    slots = BootSlots(2)
    slots.on_free = lambda: freed.append(slots.booting())
    release = slots.acquire(Rank.INTERACTIVE)
    other = slots.acquire(Rank.INTERACTIVE)
    release()
    release()
    assert slots.booting() == 1
    assert freed == [1]
    other()
    assert slots.booting() == 0


def test_the_default_is_three_boots_per_core() -> None:
    assert cores() == len(os.sched_getaffinity(0))
    assert default_limit() == 3 * cores()
