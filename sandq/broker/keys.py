"""The Redis keys of sandq's own bookkeeping, namespaced by the deployment's queue name.

Every key starts with ``sandq:{<queue>}:``. The braces make the queue name a Redis Cluster hash
tag: all the keys of one deployment fall in one slot, so a Lua script may touch any of them
(each script declares every key it touches in its KEYS). Celery's own keys (its queues,
``unacked``, the results) are kombu's and carry no tag.
"""

from __future__ import annotations

from typing import Literal

Lane = Literal["0", "1"]
"""A tenant's line of parked executions: "0" interactive, "1" batch (served after)."""
INTERACTIVE: Lane = "0"
BATCH: Lane = "1"
LANES: tuple[Lane, Lane] = (INTERACTIVE, BATCH)


class Keys:
    """Key names for one deployment (``namespace`` is ``Settings.queue``)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = f"sandq:{{{namespace}}}:"
        """What every key starts with; ``{<queue>}`` is the hash tag."""
        self.queued = self._key("queued")
        """Sorted set of admitted, not yet started execution ids, scored by expiry."""
        self.in_flight = self._key("inflight")
        """Sorted set of running execution ids, scored by lease expiry."""
        self.parked = self._key("parked")
        """Set of executions refused a slot, waiting in their tenant's line for a hand-off."""
        self.parked_tenants = self._key("parked", "tenants")
        """Sorted set of tenants with parked executions, scored by when each was last served."""
        self.entries = self._key("parked", "entries")
        """Hash of execution id -> what it takes to send it again (while parked or handed off)."""
        self.handing = self._key("handing")
        """Sorted set of executions handed a slot and sent back to the queue, scored by time."""
        self.handing_tokens = self._key("handing", "tokens")
        """Hash of handed-off execution id -> the token of the message that carries it."""
        self.claims = self._key("claims")
        """Hash of handed-off execution id -> the token of the one message allowed to run it."""
        self.claim_expiry = self._key("claims", "expiry")
        """Sorted set of the execution ids in ``claims``, scored by when each claim expires."""
        self.active = self._key("active")
        """Sorted set of tenants scored by their last admission: those recent share the slots."""
        self.tenants = self._key("tenants")
        """Set of every tenant that has submitted (each has its own queue)."""
        self.cancel_channel = self._key("cancel")
        """Pub/sub channel on which cancelled execution ids are announced."""
        self.simulated_runs = self._key("simulated", "runs")
        """List of runs recorded by the simulated backend (benchmarks only)."""

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def queued_for(self, tenant: str) -> str:
        """``queued`` for one tenant."""
        return self._key("queued", tenant)

    def in_flight_for(self, tenant: str) -> str:
        """``in_flight`` for one tenant."""
        return self._key("inflight", tenant)

    def parked_for(self, tenant: str, lane: Lane) -> str:
        """The line of ``tenant``'s parked ids in ``lane``."""
        return self._key("parked", tenant, lane)

    def cancel_marker(self, execution_id: str) -> str:
        """Present once ``execution_id`` is cancelled."""
        return self._key("cancel", execution_id)

    def output(self, execution_id: str) -> str:
        """Stream of an execution's live output (``sandq.broker.output``)."""
        return self._key("output", execution_id)
