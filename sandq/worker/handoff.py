"""The fair dispatcher: free in-flight slots go to parked executions, and each is sent back in line.

An execution refused a slot is parked in its tenant's line (``InFlight.acquire``). Whenever a
slot is released, and every ``handoff_seconds`` besides (for slots freed by expired leases), a
worker hands the free slots to parked executions: interactive before batch, and the tenant
running the fewest first. Each handed execution already holds its slot when its message is sent
back to the queue, so no one overtakes it. The hand-off stays recorded until the message is sent,
and one left unclaimed for ``lease_seconds`` (its sender died) is sent again; the token each
message carries lets exactly one copy run.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from sandq.broker.keys import Keys
from sandq.broker.scripts import load_script
from sandq.settings import Settings
from sandq.worker.inflight import Parked
from sandq.worker.periodic import Periodic

log = logging.getLogger(__name__)

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
