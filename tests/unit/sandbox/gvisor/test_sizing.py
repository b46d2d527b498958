"""Sizing the warm pool: Little's law on the arrivals, a floor, a ceiling and the interactive reserve."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sandq.sandbox.gvisor.sizing import (
    BOOTS_KEPT,
    FIRST_BOOT_SECONDS,
    MISS_SECONDS,
    RISE_SECONDS,
    Demand,
    pick,
    poisson_quantile,
    refilling_reserve,
)
from tests.conftest import make_settings


def demand(tmp_path: Path, **overrides: object) -> Demand:
    values: dict[str, object] = {"warm_pool_min": 2, "warm_pool_max": 16, "warm_pool_reserve": 2}
    values.update(overrides)
    return Demand(make_settings("redis://unused", tmp_path, **values))


def poisson_cdf(mean: float, k: int) -> float:
    return sum(math.exp(-mean) * mean**i / math.factorial(i) for i in range(k + 1))


@pytest.mark.parametrize("mean", [0.0, 0.1, 0.8, 1.75, 3.0, 8.0])
def test_the_quantile_is_the_smallest_count_covering_99_percent(mean: float) -> None:
    k = poisson_quantile(mean)
    assert poisson_cdf(mean, k) >= 0.99
    assert k == 0 or poisson_cdf(mean, k - 1) < 0.99


def test_interactive_work_takes_the_first_sandbox_ready_or_booting() -> None:
    assert pick(ready=2, booting=1, reserve=2, interactive=True) == 0
    assert pick(ready=0, booting=1, reserve=2, interactive=True) == 0  # the oldest boot
    assert pick(ready=0, booting=0, reserve=2, interactive=True) is None  # cold


def test_batch_work_leaves_the_reserve_to_interactive_work() -> None:
    assert pick(ready=3, booting=0, reserve=2, interactive=False) == 0  # a ready one is spare
    assert pick(ready=2, booting=0, reserve=2, interactive=False) is None  # cold: both are reserved
    assert pick(ready=1, booting=2, reserve=2, interactive=False) == 2  # the booting one past the reserve
    assert pick(ready=1, booting=1, reserve=2, interactive=False) is None
    assert pick(ready=1, booting=0, reserve=0, interactive=False) == 0  # no reserve: anything


def test_the_boots_refilling_the_reserve_are_the_oldest_missing_from_it() -> None:
    assert refilling_reserve(ready=0, booting=3, reserve=2) == 2
    assert refilling_reserve(ready=1, booting=3, reserve=2) == 1
    assert refilling_reserve(ready=2, booting=3, reserve=2) == 0
    assert refilling_reserve(ready=0, booting=1, reserve=2) == 1


def test_an_idle_pool_keeps_its_floor(tmp_path: Path) -> None:
    assert demand(tmp_path).target(now=100.0) == 2
    assert demand(tmp_path, warm_pool_min=0).target(now=100.0) == 1


def test_the_size_follows_littles_law_on_the_arrival_rate(tmp_path: Path) -> None:
    d = demand(tmp_path, warm_pool_reserve=0)
    for i in range(30):  # 5 per second for 6 s, boots of FIRST_BOOT_SECONDS
        d.arrived(100.0 + i / 5, interactive=False)
    now = 100.0 + 29 / 5
    assert d.rate(now) == pytest.approx(5, rel=0.15)
    in_boot = d.rate(now) * FIRST_BOOT_SECONDS
    assert d.target(now) == poisson_quantile(in_boot) + 1
    for _ in range(8):
        d.booted(3.0)  # boots got slower: more must be under way at once
    assert d.boot_seconds == 3.0
    assert d.target(now) > poisson_quantile(in_boot) + 1


def test_the_boot_time_is_how_long_most_recent_boots_last(tmp_path: Path) -> None:
    d = demand(tmp_path)
    assert d.boot_seconds == FIRST_BOOT_SECONDS  # none measured yet
    for seconds in (0.3, 0.35, 0.32, 0.31) * 3:
        d.booted(seconds)
    for _ in range(4):
        d.booted(2.5)  # a few that waited long for spare CPU
    assert d.boot_seconds == pytest.approx(0.35)
    for _ in range(12):
        d.booted(1.2)  # under load most boots wait: their replacements take that long
    assert d.boot_seconds == pytest.approx(1.2)
    for _ in range(BOOTS_KEPT):
        d.booted(0.4)  # only the latest boots count
    assert d.boot_seconds == pytest.approx(0.4)


def test_the_size_rises_at_once_and_falls_back_to_the_floor_when_idle(tmp_path: Path) -> None:
    d = demand(tmp_path, warm_pool_reserve=0, warm_pool_idle_seconds=30)
    for i in range(20):
        d.arrived(100.0 + i * 0.1, interactive=False)  # a burst of 20 in 2 s
    assert d.rate(102.0) >= 20 / RISE_SECONDS * 0.95
    high = d.target(102.0)
    assert high > 2
    assert 2 < d.target(102.0 + RISE_SECONDS + 5) <= high  # the long window still remembers the burst
    assert d.target(102.0 + 31) == 2  # idle for the whole window: the floor


def test_the_size_stops_at_the_ceiling(tmp_path: Path) -> None:
    d = demand(tmp_path, warm_pool_max=4)
    for i in range(200):
        d.arrived(100.0 + i * 0.01, interactive=False)
    assert d.target(102.0) == 4


def test_the_reserve_holds_while_interactive_work_is_around(tmp_path: Path) -> None:
    d = demand(tmp_path, warm_pool_reserve=2, interactive_reserve_seconds=10, warm_pool_min=0)
    assert d.reserve(100.0) == 0
    base = d.target(100.0)
    d.arrived(100.0, interactive=False)
    assert d.reserve(100.5) == 0  # batch work alone has no reserve
    d.arrived(101.0, interactive=True)
    assert d.reserve(105.0) == 2
    assert d.target(105.0) >= base + 2
    assert d.reserve(111.5) == 0  # nothing interactive for 10 s: the reserve goes back to batch work


def test_one_more_sandbox_boots_ahead_of_demand_for_a_while_after_a_request_found_none_ready(
    tmp_path: Path,
) -> None:
    d = demand(tmp_path)
    assert d.ahead(100.0, floor=2) == 2
    d.missed(100.0)  # the refills fell behind the arrivals
    assert d.ahead(100.0, floor=2) == 3
    assert d.ahead(100.0 + MISS_SECONDS - 0.1, floor=2) == 3
    assert d.ahead(100.0 + MISS_SECONDS, floor=2) == 2  # caught up since: back to the floor
    d.missed(120.0)
    assert d.ahead(121.0, floor=1) == 2
