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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

import redis

from sandq.broker.keys import BATCH, INTERACTIVE, Keys
from sandq.broker.routing import Priority
from sandq.broker.scripts import (
    AcquireScript,
    Handed,
    HandoffScript,
    RecoverScript,
    RenewScript,
    SentScript,
    UnparkScript,
)
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
        entry = {field.name: getattr(self, field.name) for field in fields(self)}  # asdict deep-copies
        return json.dumps(entry, separators=(",", ":"))

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
        self._acquire = AcquireScript(client, self.keys)
        self._renew = RenewScript(client, self.keys)
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._renewer = Periodic("sandq-leases", settings.lease_seconds / 3, self._renew_held)
        self._renewing = threading.Lock()

    def acquire(self, execution_id: str, tenant: str, token: str = "", park: Parked | None = None) -> Verdict:
        """Take a slot for ``execution_id`` (and stop counting it as queued), or park it, or say why not.

        ``token`` identifies a message sent by a hand-off ("" for a first delivery). A tenant above
        its fair share leaves ``reserved_slots`` to the other active tenants, and no new execution
        overtakes a parked one, except one of a tenant below its fair share with none parked.
        """
        settings = self.settings
        verdict = self._acquire(
            execution_id=execution_id,
            tenant=tenant,
            lease_seconds=settings.lease_seconds,
            cap=settings.max_in_flight,
            tenant_cap=settings.in_flight_cap(tenant),
            token=token,
            entry=park.to_json() if park else None,
            lane=INTERACTIVE if park is None or park.priority == "interactive" else BATCH,
            active_seconds=settings.active_tenant_seconds,
            reserved=settings.reserved_slots,
        )
        return Verdict(verdict)

    def renew(self, execution_id: str, tenant: str) -> bool:
        """Extend the lease; False if it had run out (the slot may be someone else's)."""
        lease_seconds = self.settings.lease_seconds
        return self._renew(execution_id=execution_id, tenant=tenant, lease_seconds=lease_seconds)

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
        if self._renewing.acquire(blocking=False):
            self._renewer.start()
        with self._lock:
            self._held[execution_id] = tenant
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(execution_id, None)
            self.release(execution_id, tenant)

    def _renew_held(self) -> None:
        """Renew the lease of every slot held in this process (every third of ``lease_seconds``)."""
        with self._lock:
            held = list(self._held.items())
        for execution_id, tenant in held:
            try:
                if not self.renew(execution_id, tenant):
                    log.warning("the in-flight lease of %s had expired", execution_id)
            except redis.RedisError as error:
                log.warning("could not renew the lease of %s: %s", execution_id, error)


HANDOFFS_PER_CALL = 100
HANDOFF_ROUNDS = 3
"""Hand-off calls at most per ``hand_off``: another follows only if a tenant parked meanwhile."""
CLAIMS_FORGOTTEN_PER_CALL = 1000
"""Expired claims ``recover`` forgets at most per call."""


@dataclass(frozen=True)
class HandedOff:
    """A parked execution on its way back to the queue, in the message marked ``token``."""

    id: str
    token: str
    entry: Parked

    @classmethod
    def of(cls, handed: Handed) -> HandedOff:
        """A hand-off as a script returns it."""
        execution_id, token, entry = handed
        return cls(execution_id, token, Parked.from_json(entry))


Send = Callable[[HandedOff], None]


class HandOff:
    """Hands free slots to parked executions and sends them; one instance per worker process."""

    def __init__(self, settings: Settings, client: redis.Redis, send: Send) -> None:
        self.settings = settings
        self.keys = Keys(settings.queue)
        self.send = send
        self._handoff = HandoffScript(client, self.keys)
        self._recover = RecoverScript(client, self.keys)
        self._unpark = UnparkScript(client, self.keys)
        self._sent = SentScript(client, self.keys)
        self._periodic = Periodic("sandq-handoff", settings.handoff_seconds, self.tick)
        self._started = threading.Lock()

    def hand_off(self) -> int:
        """Give free slots to parked executions, fairly, and send them; return how many were sent.

        The script serves the parked tenants read just before; if one parked meanwhile and slots
        are left, another call serves it at once. With nothing parked there is no call: whoever
        parks next hands off right after parking (``InFlight.acquire``'s caller pokes)."""
        settings, sent = self.settings, 0
        for _ in range(HANDOFF_ROUNDS):
            tenants = self._handoff.parked_tenants()
            if not tenants:
                break
            handed, left_out = self._handoff(
                tenants={tenant: settings.in_flight_cap(tenant) for tenant in tenants},
                lease_seconds=settings.lease_seconds,
                cap=settings.max_in_flight,
                most=HANDOFFS_PER_CALL,
                claim_seconds=settings.result_ttl_seconds,
                active_seconds=settings.active_tenant_seconds,
                reserved=settings.reserved_slots,
            )
            sent += self._send_all(handed)
            if not left_out:
                break
        return sent

    def recover(self) -> int:
        """Send again the hand-offs no worker claimed within ``lease_seconds``."""
        again = self._recover(
            stale_seconds=self.settings.lease_seconds,
            claim_seconds=self.settings.result_ttl_seconds,
            most_forgotten=CLAIMS_FORGOTTEN_PER_CALL,
        )
        return self._send_all(again)

    def unpark_cancelled(self, execution_id: str) -> bool:
        """Send a cancelled parked execution at once, without a slot (its worker ends it)."""
        tenant = self._unpark.tenant_of(execution_id)
        if tenant is None:
            return False
        claim_seconds = self.settings.result_ttl_seconds
        taken = self._unpark(execution_id=execution_id, tenant=tenant, claim_seconds=claim_seconds)
        return self._send_all([taken] if taken else []) > 0

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

    def _send_all(self, handed: Sequence[Handed]) -> int:
        for one in handed:
            handed_off = HandedOff.of(one)
            self.send(handed_off)
            self._sent(execution_id=handed_off.id, token=handed_off.token)
        return len(handed)
