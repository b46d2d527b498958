"""How many warm sandboxes to keep, and which one a request takes: pure, for the warm pool.

Each sandbox taken is replaced by a boot that lasts about ``T`` seconds, so with requests
arriving at rate ``λ`` the sandboxes booting at any moment follow a Poisson law of mean ``λT``
(Little's law gives the mean). Keeping ``S`` sandboxes, ready or booting, leaves one ready for
each request unless ``S`` or more are booting: ``S`` is that law's 99th percentile plus one.
``λ`` is the higher of the rates over the last ``RISE_SECONDS`` (to follow a rise at once) and
over ``warm_pool_idle_seconds`` (to fall slowly, back to the floor once idle). ``T`` is how long
most boots last now: the upper quartile of the recent boots. Under load boots wait for spare
CPU and last longer, and a taken sandbox's replacement takes that long. (The lower quartile, a
boot with the CPU, was used before: at 50% load, 4 alternating runs of 300 each, 0.3-1.8% of
requests waited for a boot against 0.3-0.9%, and the p99 was 172-347 ms against 124-174 ms.)
The extra sandboxes cost memory, not CPU: boots ahead of demand stay few at once (``booting``).
While interactive work is around, ``warm_pool_reserve`` more are kept, and batch work leaves
them to it.
The boots ahead of demand are one per core, and one more for ``MISS_SECONDS`` after a request
found none ready: at 70% load two at once refill no faster than the arrivals (``ahead``).
"""

from __future__ import annotations

import math
from collections import deque

from sandq.settings import Settings

RISE_SECONDS = 3.0
"""The short window of the arrival rate."""
MISS_SECONDS = 10.0
"""How long one more sandbox boots ahead of demand after a request found none ready."""
QUANTILE = 0.99
"""Share of requests that should find a sandbox ready, when the pool is not at its ceiling."""
FIRST_BOOT_SECONDS = 0.5
"""The boot time assumed before one is measured."""
BOOTS_KEPT = 32
"""How many of the latest boots the boot time is taken from."""
BOOT_QUANTILE = 0.75
"""The boots' quantile taken as the boot time: as long as most boots last under the current load."""


def poisson_quantile(mean: float, q: float = QUANTILE) -> int:
    """The smallest ``k`` with P(N <= k) >= ``q``, N a Poisson variable of mean ``mean``."""
    term = total = math.exp(-mean)
    k = 0
    while total < q:
        k += 1
        term *= mean / k
        total += term
    return k


def pick(ready: int, booting: int, reserve: int, interactive: bool) -> int | None:
    """The sandbox a request takes, as an index into the ready ones then the booting ones (each oldest
    first), or None: start one cold.

    Interactive work takes the first. Batch work leaves the first ``reserve`` to interactive work:
    it takes a ready one only while more than ``reserve`` are ready, else a booting one past them.
    """
    if interactive or ready > reserve:
        return 0 if ready + booting else None
    return reserve if ready + booting > reserve else None


def refilling_reserve(ready: int, booting: int, reserve: int) -> int:
    """How many of the booting sandboxes (the oldest) refill the reserve: they boot at interactive weight."""
    return min(booting, max(0, reserve - ready))


class Demand:
    """Arrivals and boot times of one pool, and the size they call for; the caller locks."""

    def __init__(self, settings: Settings) -> None:
        self.ceiling = settings.warm_pool_max
        self.floor = min(settings.warm_pool_min, self.ceiling)
        self.window = settings.warm_pool_idle_seconds
        self.reserve_size = settings.warm_pool_reserve
        self.reserve_seconds = settings.interactive_reserve_seconds
        self._boots: deque[float] = deque(maxlen=BOOTS_KEPT)
        self._arrivals: deque[float] = deque()
        self._last_interactive = -math.inf
        self._last_miss = -math.inf

    def arrived(self, at: float, interactive: bool) -> None:
        """A request of the pool's shape came at ``at`` (monotonic seconds)."""
        self._arrivals.append(at)
        if interactive:
            self._last_interactive = at

    def missed(self, at: float) -> None:
        """A request found no sandbox ready at ``at``: it waited for one booting, or started one cold."""
        self._last_miss = at

    def ahead(self, now: float, floor: int) -> int:
        """How many sandboxes may boot at once ahead of demand: ``floor``, and one more for
        ``MISS_SECONDS`` after a request found none ready (the refills fell behind the arrivals)."""
        return floor + 1 if now - self._last_miss < MISS_SECONDS else floor

    def booted(self, seconds: float) -> None:
        """A boot, not taken before it was ready, lasted ``seconds``."""
        self._boots.append(seconds)

    @property
    def boot_seconds(self) -> float:
        """How long most recent boots lasted (``FIRST_BOOT_SECONDS`` until one is measured)."""
        if not self._boots:
            return FIRST_BOOT_SECONDS
        return sorted(self._boots)[int(BOOT_QUANTILE * (len(self._boots) - 1))]

    def rate(self, now: float) -> float:
        """Requests per second: the higher of the short and the long window's rate."""
        while self._arrivals and self._arrivals[0] < now - self.window:
            self._arrivals.popleft()
        recent = 0
        for at in reversed(self._arrivals):
            if at < now - RISE_SECONDS:
                break
            recent += 1
        return max(recent / RISE_SECONDS, len(self._arrivals) / self.window)

    def reserve(self, now: float) -> int:
        """The warm sandboxes kept for interactive work: ``warm_pool_reserve`` while it is around, else 0."""
        return self.reserve_size if now - self._last_interactive < self.reserve_seconds else 0

    def target(self, now: float) -> int:
        """How many sandboxes to keep, ready or booting."""
        wanted = poisson_quantile(self.rate(now) * self.boot_seconds) + 1 + self.reserve(now)
        return max(self.floor, min(self.ceiling, wanted))
