"""A Redis semaphore with leases bounding the sandboxes running at once, globally and per tenant.

A slot is an entry in a sorted set scored by its lease expiry; a live worker renews its
leases, so the slots of a dead worker come back by themselves when theirs run out. An execution
refused a slot is parked in its tenant's line (``sandq.worker.handoff`` hands it the next free
slot, fairly) instead of polling for one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

import redis

from sandq.broker.keys import Keys
from sandq.broker.routing import Priority
from sandq.broker.scripts import load_script
from sandq.settings import Settings

log = logging.getLogger(__name__)


class Verdict(IntEnum):
    """The answer of ``InFlight.acquire``."""

    ACQUIRED = 0
    PARKED = 1
    """Refused by a cap: the execution waits in its tenant's line for a slot."""
    REFUSED = 2
    """Refused by a cap, and not parked (the caller did not ask)."""
    DUPLICATE = 3
    """Another copy of this execution is parked, or has claimed its slot: drop this one."""


@dataclass(frozen=True)
class Parked:
    """What it takes to send a parked execution back to the queue."""

    tenant: str
    payload: dict[str, Any]
    queue: str
    priority: Priority
    retries: int

    def to_json(self) -> str:
        """The entry as stored in Redis."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Parked:
        """An entry read back from Redis."""
        return cls(**json.loads(raw))


class InFlight:
    """Acquire, renew and release in-flight slots; one instance per worker process."""

    def __init__(
        self, settings: Settings, client: redis.Redis, on_release: Callable[[], object] = lambda: None
    ) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keys(settings.queue)
        self.on_release = on_release
        self._acquire = load_script(client, "acquire")
        self._renew = load_script(client, "renew")
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def acquire(self, execution_id: str, tenant: str, token: str = "", park: Parked | None = None) -> Verdict:
        """Take a slot for ``execution_id`` (and stop counting it as queued), or park it, or say why not.

        ``token`` identifies a message sent by a hand-off ("" for a first delivery). A tenant above
        its fair share leaves ``reserved_slots`` to the other active tenants, and no new execution
        overtakes a parked one, except one of a tenant below its fair share with none parked.
        """
        keys = self.keys
        lane = "0" if park is None or park.priority == "interactive" else "1"
        verdict = self._acquire(
            keys=[
                keys.in_flight,
                keys.in_flight_for(tenant),
                keys.queued,
                keys.queued_for(tenant),
                keys.parked,
                keys.parked_for(tenant, lane),
                keys.parked_for(tenant, "1" if lane == "0" else "0"),
                keys.parked_tenants,
                keys.entries,
                keys.handing,
                keys.handing_tokens,
                keys.claim(execution_id),
                keys.active,
            ],
            args=[
                execution_id,
                tenant,
                self.settings.lease_seconds,
                self.settings.max_in_flight,
                self.settings.in_flight_cap(tenant),
                token,
                park.to_json() if park else "",
                self.settings.active_tenant_seconds,
                self.settings.reserved_slots,
            ],
        )
        return Verdict(int(verdict))

    def renew(self, execution_id: str, tenant: str) -> bool:
        """Extend the lease; False if it had run out (the slot may be someone else's)."""
        keys = [self.keys.in_flight, self.keys.in_flight_for(tenant)]
        return bool(self._renew(keys=keys, args=[execution_id, self.settings.lease_seconds]))

    def release(self, execution_id: str, tenant: str) -> None:
        """Give the slot back, then call ``on_release`` (which must not raise); if Redis is
        unreachable, the lease runs out instead."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.in_flight, execution_id)
        pipe.zrem(self.keys.in_flight_for(tenant), execution_id)
        try:
            pipe.execute()
        except redis.RedisError as error:  # the execution's result matters more than the slot
            log.warning("could not release the slot of %s (its lease will expire): %s", execution_id, error)
            return
        self.on_release()

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
