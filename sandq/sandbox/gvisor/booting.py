"""How many local sandboxes boot at once: a few, each at full speed, interactive work first.

A boot costs about 250 ms of CPU, most of it in the kernel (ptrace, namespaces, mounts), over
about 400 ms: alone it keeps more than half a core busy. Many boots at once end no sooner; they
only slow every running sandbox down, whatever its CPU weight (measured on 2 cores: an
interactive ``print(1)`` beside a batch's boots took 45-50 ms with 7-15 boots at once, 17-22 ms
with 3-4, 15 ms alone; executions per second at saturation: 5.4 with 3 at once, 5.9 with 4,
6.0 with 6).

``BootSlots`` bounds the sandboxes booting, from their start to their runner's readiness byte
(``max_booting``, by default three per core). A request waits for a slot at its rank:
interactive before batch, each in arrival order. The warm pool only takes a slot nobody
waits for, except to refill the interactive reserve: it holds slots back from batch work for
that (``hold``), all but one. It boots ahead of demand only while fewer than ``ahead`` boot
(``pace``): while it still has sandboxes, it refills a few at a time (at 50% load, with 298 of
300 requests finding one ready, the p99 was 118 ms with 2 boots ahead at once, 222-468 ms with
6). The pool paces ``ahead``: one per core, one more while its refills fall behind
(``sizing.Demand.ahead``), unless ``max_booting_ahead`` fixes it.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from enum import IntEnum


class Rank(IntEnum):
    """Who gets the next free slot: the lowest rank waiting."""

    INTERACTIVE = 0
    """An interactive request, or a boot that refills the interactive reserve."""
    BATCH = 1
    AHEAD = 2
    """A boot ahead of demand."""


def default_limit() -> int:
    """Three boots per core this process may run on."""
    return 3 * cores()


def cores() -> int:
    """How many cores this process may run on."""
    return len(os.sched_getaffinity(0)) or 1


class BootSlots:
    """A counting semaphore over sandboxes booting, handed out by rank (then first come, first served)."""

    def __init__(
        self, limit: int, ahead: int | None = None, on_free: Callable[[], None] | None = None
    ) -> None:
        """``limit`` boots at once, and a boot ahead of demand only while fewer than ``ahead`` (default
        ``limit``) boot; ``on_free()`` is called (outside the lock) whenever a slot frees."""
        self.limit = limit
        self.ahead = limit if ahead is None else ahead
        self.on_free = on_free
        self._taken = 0
        self._held = 0
        self._waiting: list[tuple[int, int]] = []
        self._tickets = itertools.count()
        self._changed = threading.Condition()

    def acquire(self, rank: Rank) -> Callable[[], None]:
        """Wait for a slot; returns its release (idempotent)."""
        with self._changed:
            ticket = (int(rank), next(self._tickets))
            self._waiting.append(ticket)
            try:
                while not (self._free(rank) and min(self._waiting) == ticket):
                    self._changed.wait()
            finally:
                self._waiting.remove(ticket)
                self._changed.notify_all()
            self._taken += 1
        return self._releaser()

    def try_acquire(self, rank: Rank) -> Callable[[], None] | None:
        """A slot's release if one is free and nobody of the same or a lower rank waits, else None."""
        with self._changed:
            if not self._free(rank) or any(r <= rank for r, _ in self._waiting):
                return None
            self._taken += 1
        return self._releaser()

    def hold(self, count: int) -> None:
        """Keep ``count`` slots (at most all but one) for interactive boots: batch and ahead-of-demand
        boots wait while only those are free."""
        held = max(0, min(count, self.limit - 1))
        with self._changed:
            if held != self._held:
                self._held = held
                self._changed.notify_all()

    def _free(self, rank: Rank) -> bool:
        held = 0 if rank is Rank.INTERACTIVE else self._held
        limit = min(self.limit, self.ahead) if rank is Rank.AHEAD else self.limit
        return self._taken < limit - held

    def pace(self, ahead: int) -> None:
        """Boot ahead of demand only while fewer than ``ahead`` boot."""
        with self._changed:
            if ahead != self.ahead:
                self.ahead = ahead
                self._changed.notify_all()

    def booting(self) -> int:
        """How many slots are taken."""
        with self._changed:
            return self._taken

    def _releaser(self) -> Callable[[], None]:
        once = threading.Lock()

        def release() -> None:
            if not once.acquire(blocking=False):
                return  # released already
            with self._changed:
                self._taken -= 1
                self._changed.notify_all()
            if self.on_free is not None:
                self.on_free()

        return release
