"""In-flight slots and the fair hand-off: a Redis semaphore with leases, and a line per tenant.

A slot is an entry in a sorted set scored by its lease expiry; a live worker renews its
leases, so the slots of a dead worker come back by themselves when theirs run out. An
execution refused a slot is parked in its tenant's line (``InFlight.acquire``), its message
acknowledged, instead of polling for one. Whenever a slot is released, and every
``handoff_seconds`` besides (for slots freed by expired leases), a worker hands the free slots
to parked executions (``HandOff``): interactive before batch, and the tenant running the
fewest first. Each handed execution already holds its slot when its message is sent back to
the queue, so no one overtakes it. The hand-off stays recorded until the message is sent, and
one left unclaimed for ``lease_seconds`` (its sender died) is sent again; the token each
message carries lets exactly one copy run.

Called by the worker (``sandq.worker``); every decision is one atomic Lua script (``lua/``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

import redis

from sandq.broker.keys import Keys
from sandq.broker.routing import Priority
from sandq.broker.scripts import load_script
from sandq.periodic import Periodic
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


HANDOFFS_PER_CALL = 100


@dataclass(frozen=True)
class HandedOff:
    """A parked execution on its way back to the queue, in the message marked ``token``."""

    id: str
    token: str
    entry: Parked


Send = Callable[[HandedOff], None]


class HandOff:
    """Hands free slots to parked executions and sends them; one instance per worker process."""

    def __init__(self, settings: Settings, client: redis.Redis, send: Send) -> None:
        self.settings = settings
        self.keys = Keys(settings.queue)
        self.send = send
        self._handoff = load_script(client, "handoff")
        self._recover = load_script(client, "recover")
        self._unpark = load_script(client, "unpark")
        self._sent = load_script(client, "sent")
        self._periodic = Periodic("sandq-handoff", settings.handoff_seconds, self.tick)
        self._started = threading.Lock()

    def hand_off(self) -> int:
        """Give free slots to parked executions, fairly, and send them; return how many were sent."""
        keys = self.keys
        caps = {tenant: limits.max_in_flight for tenant, limits in self.settings.tenant_overrides.items()
                if limits.max_in_flight}
        settings = self.settings
        handed = self._handoff(
            keys=[keys.in_flight, keys.parked, keys.parked_tenants, keys.entries, keys.handing,
                  keys.handing_tokens, keys.queued, keys.active],
            args=[settings.lease_seconds, settings.max_in_flight, settings.max_in_flight_per_tenant,
                  json.dumps(caps), keys.in_flight_prefix, keys.parked_prefix, keys.queued_prefix,
                  HANDOFFS_PER_CALL, keys.claim(""), settings.result_ttl_seconds,
                  settings.active_tenant_seconds, settings.reserved_slots],
        )
        return self._send_all(handed)

    def recover(self) -> int:
        """Send again the hand-offs no worker claimed within ``lease_seconds``."""
        keys = self.keys
        again = self._recover(
            keys=[keys.entries, keys.handing, keys.handing_tokens],
            args=[self.settings.lease_seconds, keys.claim(""), self.settings.result_ttl_seconds],
        )
        return self._send_all(again)

    def unpark_cancelled(self, execution_id: str) -> bool:
        """Send a cancelled parked execution at once, without a slot (its worker ends it)."""
        keys = self.keys
        taken = self._unpark(
            keys=[keys.parked, keys.entries, keys.handing, keys.handing_tokens, keys.parked_tenants],
            args=[execution_id, keys.parked_prefix, keys.claim(""), self.settings.result_ttl_seconds],
        )
        return self._send_all(taken) > 0

    def poke(self, execution_id: str | None = None) -> None:
        """Hand off now (and first unpark ``execution_id`` if it was cancelled); a failure is only
        logged, since the periodic hand-off catches up."""
        try:
            if execution_id is not None:
                self.unpark_cancelled(execution_id)
            self.hand_off()
        except Exception:
            log.exception("hand-off failed; the periodic one will catch up")

    def tick(self) -> None:
        """What each worker process does every ``handoff_seconds``."""
        self.hand_off()
        self.recover()

    def start(self) -> None:
        """Begin the periodic hand-off (once per process)."""
        if self._started.acquire(blocking=False):
            self._periodic.start()

    def _send_all(self, flat: Sequence[bytes]) -> int:
        for at in range(0, len(flat), 3):
            handed = HandedOff(flat[at].decode(), flat[at + 1].decode(), Parked.from_json(flat[at + 2]))
            self.send(handed)
            keys = self.keys
            self._sent(keys=[keys.entries, keys.handing, keys.handing_tokens], args=[handed.id, handed.token])
        return len(flat) // 3
