"""The interactive reserve of a worker's concurrency: batch work leaves its last slots to interactive work.

Celery's consumer fetches a message whenever it holds fewer than ``concurrency``, taking the
highest priority queued at that moment: with only batch work queued, batch work would take
every slot, and interactive work arriving next would wait for a batch execution to end. So
while interactive work has been seen in the last ``interactive_reserve_seconds``, a worker that
holds ``concurrency - interactive_reserve`` batch executions fetches only what goes ahead of
batch work (interactive executions, and those a hand-off sends back holding their slot): the
Redis transport's BRPOP then names only those priorities' lists, with a short timeout, so that
batch work is fetched again soon after one of its executions ends. With no interactive work
around, batch work takes every slot.

``InteractiveReserve`` is a consumer bootstep (``sandq.worker.process`` adds it); ``Lanes`` is
its decision, pure but for the clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from celery import bootsteps
from celery.signals import task_received
from celery.worker import state

from sandq.broker.routing import HANDED_OFF_PRIORITY, PRIORITY_VALUES, Priority, priority_of
from sandq.settings import Settings, get_settings

log = logging.getLogger(__name__)

AHEAD_OF_BATCH = [HANDED_OFF_PRIORITY, PRIORITY_VALUES["interactive"]]
"""The priorities fetched while batch work holds its share (the Redis transport's priority steps)."""
HELD_BACK_POLL_SECONDS = 0.1
"""BRPOP timeout while batch work is held back: how soon a batch slot that frees is filled again."""


def priority_of_request(request: Any) -> Priority:
    """The kind of work of a received Celery request (a hand-off names it in the task's kwargs)."""
    named = (request.kwargs or {}).get("priority")
    if named in PRIORITY_VALUES:
        return named  # type: ignore[no-any-return]
    return priority_of((request.delivery_info or {}).get("priority"))


class Lanes:
    """Whether a worker of ``concurrency`` slots holds batch work back, given what it runs."""

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.reserve = min(settings.interactive_reserve, concurrency - 1)
        self.batch_share = concurrency - self.reserve
        self.seconds = settings.interactive_reserve_seconds
        self.last_interactive = -float("inf")

    def received(self, priority: Priority, at: float) -> None:
        """A message of ``priority`` was received at ``at`` (monotonic seconds)."""
        if priority == "interactive":
            self.last_interactive = at

    def hold_back_batch(self, running: Iterable[Priority], now: float) -> bool:
        """True if no batch message may be fetched now: batch work holds its share of the slots
        and interactive work was seen lately."""
        if not self.reserve or now - self.last_interactive >= self.seconds:
            return False
        return sum(1 for p in running if p == "batch") >= self.batch_share


class InteractiveReserve(bootsteps.StartStopStep):
    """Makes the consumer's fetch leave ``interactive_reserve`` slots to interactive work (Redis only)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.lanes: Lanes | None = None

    def start(self, consumer: Any) -> None:
        """Wrap the task channel's BRPOP: while batch work is held back, it names only what goes first."""
        channel = consumer.task_consumer.channel
        if not hasattr(channel, "_brpop_start") or not get_settings().interactive_reserve:
            return
        lanes = self.lanes = Lanes(get_settings(), consumer.pool.num_processes)
        task_received.connect(self._received, weak=False)
        fetch = channel._brpop_start

        def brpop_start(timeout: float | None = None) -> Any:
            running = (priority_of_request(r) for r in list(state.reserved_requests))
            if not lanes.hold_back_batch(running, time.monotonic()):
                return fetch(timeout)
            steps, channel.priority_steps = channel.priority_steps, AHEAD_OF_BATCH
            try:
                return fetch(HELD_BACK_POLL_SECONDS)
            finally:
                channel.priority_steps = steps

        channel._brpop_start = brpop_start
        log.info("interactive reserve: %d of %d slots", lanes.reserve, consumer.pool.num_processes)

    def stop(self, consumer: Any) -> None:
        """Stop watching received messages (the channel goes with the connection)."""
        task_received.disconnect(self._received)

    def _received(self, request: Any = None, **_: Any) -> None:
        if self.lanes is not None and request is not None:
            self.lanes.received(priority_of_request(request), time.monotonic())
