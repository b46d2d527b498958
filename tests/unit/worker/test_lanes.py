"""The interactive reserve of a worker's slots: when batch work is held back; the priority of a request."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sandq.broker.routing import HANDED_OFF_PRIORITY, PRIORITY_VALUES
from sandq.worker.lanes import Lanes, priority_of_request
from tests.conftest import make_settings


def lanes(tmp_path: Path, concurrency: int = 4, reserve: int = 1) -> Lanes:
    settings = make_settings(
        "redis://unused", tmp_path, interactive_reserve=reserve, interactive_reserve_seconds=10
    )
    return Lanes(settings, concurrency)


def test_batch_work_is_held_back_at_its_share_while_interactive_work_is_around(tmp_path: Path) -> None:
    lane = lanes(tmp_path, concurrency=4, reserve=1)
    lane.received("interactive", at=100.0)
    assert not lane.hold_back_batch(["batch", "batch"], now=101.0)
    assert lane.hold_back_batch(["batch", "batch", "batch"], now=101.0)  # 3 of 4: the last is reserved
    assert not lane.hold_back_batch(["batch", "batch", "interactive"], now=101.0)


def test_batch_work_takes_every_slot_when_nothing_interactive_is_around(tmp_path: Path) -> None:
    lane = lanes(tmp_path, concurrency=4, reserve=1)
    assert not lane.hold_back_batch(["batch"] * 3, now=101.0)  # never seen
    lane.received("batch", at=100.0)
    assert not lane.hold_back_batch(["batch"] * 3, now=101.0)
    lane.received("interactive", at=100.0)
    assert lane.hold_back_batch(["batch"] * 3, now=109.0)
    assert not lane.hold_back_batch(["batch"] * 3, now=110.5)  # 10 s without interactive work


def test_no_reserve_and_a_single_slot_never_hold_batch_work_back(tmp_path: Path) -> None:
    no_reserve = lanes(tmp_path, concurrency=4, reserve=0)
    no_reserve.received("interactive", at=100.0)
    assert not no_reserve.hold_back_batch(["batch"] * 4, now=100.5)
    single = lanes(tmp_path, concurrency=1, reserve=1)  # the reserve never takes the only slot
    single.received("interactive", at=100.0)
    assert single.reserve == 0
    assert not single.hold_back_batch(["batch"], now=100.5)


def test_the_priority_of_a_request_is_its_messages_or_the_one_its_hand_off_names() -> None:
    def request(priority: int | None, kwargs: dict[str, str] | None = None) -> SimpleNamespace:
        return SimpleNamespace(kwargs=kwargs or {}, delivery_info={"priority": priority})

    assert priority_of_request(request(PRIORITY_VALUES["batch"])) == "batch"
    assert priority_of_request(request(PRIORITY_VALUES["interactive"])) == "interactive"
    assert priority_of_request(request(None)) == "interactive"
    assert priority_of_request(request(HANDED_OFF_PRIORITY, {"priority": "batch"})) == "batch"
