"""A Redis semaphore with leases bounding the sandboxes running at once, globally and per tenant.

A slot is an entry in a sorted set scored by its lease expiry; a live worker renews its
leases, so the slots of a dead worker come back by themselves when theirs run out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import redis

from sandq.broker.keys import Keys
from sandq.broker.routing import Priority
from sandq.broker.scripts import load_script
from sandq.settings import Settings

log = logging.getLogger(__name__)


class Verdict(IntEnum):
    """The answer of ``InFlight.acquire``."""

    ACQUIRED = 0
    GLOBAL_CAP = 1
    TENANT_CAP = 2
    FAIR_SHARE = 3
    INTERACTIVE_WAITING = 4


class InFlight:
    """Acquire, renew and release in-flight slots; one instance per worker process."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keys(settings.queue)
        self._acquire = load_script(client, "acquire")
        self._renew = load_script(client, "renew")
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    @property
    def waiting_window(self) -> float:
        """Seconds a refused tenant keeps its claim to the next free slot."""
        return 4 * self.settings.cap_retry_seconds + 0.2

    def acquire(self, execution_id: str, tenant: str, priority: Priority) -> Verdict:
        """Take a slot for ``execution_id`` (and stop counting it as queued), or say why not."""
        keys = self.keys
        verdict = self._acquire(
            keys=[
                keys.in_flight,
                keys.in_flight_for(tenant),
                keys.queued,
                keys.queued_for(tenant),
                keys.waiting,
                keys.interactive_waiting,
            ],
            args=[
                execution_id,
                tenant,
                self.settings.lease_seconds,
                self.settings.max_in_flight,
                self.settings.in_flight_cap(tenant),
                keys.in_flight_prefix,
                "1" if priority == "interactive" else "0",
                self.waiting_window,
            ],
        )
        return Verdict(int(verdict))

    def retry_delay(self, verdict: Verdict, tenant: str) -> float:
        """How long a refused execution waits before asking again.

        A tenant told to yield (another tenant or interactive work waits) backs off; a tenant
        with nothing running asks again soon, so that it takes the next free slot. Everyone
        else waits ``cap_retry_seconds``.
        """
        base = self.settings.cap_retry_seconds
        if verdict in (Verdict.FAIR_SHARE, Verdict.INTERACTIVE_WAITING):
            return 4 * base
        now = float(self.redis.time()[0])
        if int(self.redis.zcount(self.keys.in_flight_for(tenant), now, "+inf")) == 0:
            return base / 5
        return base

    def renew(self, execution_id: str, tenant: str) -> bool:
        """Extend the lease; False if it had run out (the slot may be someone else's)."""
        keys = [self.keys.in_flight, self.keys.in_flight_for(tenant)]
        return bool(self._renew(keys=keys, args=[execution_id, self.settings.lease_seconds]))

    def release(self, execution_id: str, tenant: str) -> None:
        """Give the slot back; if Redis is unreachable, its lease runs out by itself instead."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.in_flight, execution_id)
        pipe.zrem(self.keys.in_flight_for(tenant), execution_id)
        try:
            pipe.execute()
        except redis.RedisError as error:  # the execution's result matters more than the slot
            log.warning("could not release the slot of %s (its lease will expire): %s", execution_id, error)

    @contextmanager
    def held(self, execution_id: str, tenant: str) -> Iterator[None]:
        """Keep the acquired slot's lease renewed while the body runs; release it after."""
        with self._lock:
            self._held[execution_id] = tenant
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_forever, name="sandq-leases", daemon=True)
                self._renewer.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(execution_id, None)
            self.release(execution_id, tenant)

    def _renew_forever(self) -> None:
        period = self.settings.lease_seconds / 3
        while True:
            time.sleep(period)
            with self._lock:
                held = list(self._held.items())
            for execution_id, tenant in held:
                try:
                    if not self.renew(execution_id, tenant):
                        log.warning("the in-flight lease of %s had expired", execution_id)
                except redis.RedisError as error:
                    log.warning("could not renew the lease of %s: %s", execution_id, error)
