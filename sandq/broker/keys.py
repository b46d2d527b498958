"""The Redis keys of sandq's own bookkeeping, namespaced by the deployment's queue name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names for one deployment (``namespace`` is ``Settings.queue``)."""

    namespace: str

    def _key(self, *parts: str) -> str:
        return ":".join(("sandq", self.namespace, *parts))

    @property
    def queued(self) -> str:
        """Sorted set of admitted, not yet started execution ids, scored by expiry."""
        return self._key("queued")

    def queued_for(self, tenant: str) -> str:
        """``queued`` for one tenant."""
        return self.queued_prefix + tenant

    @property
    def in_flight(self) -> str:
        """Sorted set of running execution ids, scored by lease expiry."""
        return self._key("inflight")

    @property
    def in_flight_prefix(self) -> str:
        """Prefix of the per-tenant in-flight sets (the tenant follows)."""
        return self._key("inflight", "")

    def in_flight_for(self, tenant: str) -> str:
        """``in_flight`` for one tenant."""
        return self.in_flight_prefix + tenant

    @property
    def parked(self) -> str:
        """Set of executions refused a slot, waiting in their tenant's line for a hand-off."""
        return self._key("parked")

    @property
    def parked_prefix(self) -> str:
        """Prefix of the per-tenant lines of parked ids (``<tenant>:<lane>`` follows)."""
        return self._key("parked", "")

    def parked_for(self, tenant: str, lane: str) -> str:
        """The line of ``tenant``'s parked ids in ``lane`` ("0" interactive, "1" batch)."""
        return f"{self.parked_prefix}{tenant}:{lane}"

    @property
    def parked_tenants(self) -> str:
        """Sorted set of tenants with parked executions, scored by when each was last served."""
        return self._key("parked", "tenants")

    @property
    def entries(self) -> str:
        """Hash of execution id -> what it takes to send it again (while parked or handed off)."""
        return self._key("parked", "entries")

    @property
    def handing(self) -> str:
        """Sorted set of executions handed a slot and sent back to the queue, scored by time."""
        return self._key("handing")

    @property
    def handing_tokens(self) -> str:
        """Hash of handed-off execution id -> the token of the message that carries it."""
        return self._key("handing", "tokens")

    def claim(self, execution_id: str) -> str:
        """The token of the handed-off message that claimed ``execution_id``'s slot."""
        return self._key("claim", execution_id)

    @property
    def queued_prefix(self) -> str:
        """Prefix of the per-tenant queued sets (the tenant follows)."""
        return self._key("queued", "")

    @property
    def active(self) -> str:
        """Sorted set of tenants scored by their last admission: those recent share the slots."""
        return self._key("active")

    @property
    def tenants(self) -> str:
        """Set of every tenant that has submitted (each has its own queue)."""
        return self._key("tenants")

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel on which cancelled execution ids are announced."""
        return self._key("cancel")

    def cancel_marker(self, execution_id: str) -> str:
        """Present once ``execution_id`` is cancelled."""
        return self._key("cancel", execution_id)

    def output(self, execution_id: str) -> str:
        """Stream of an execution's live output (``sandq.broker.output``)."""
        return self._key("output", execution_id)

    @property
    def simulated_runs(self) -> str:
        """List of runs recorded by the simulated backend (benchmarks only)."""
        return self._key("simulated", "runs")
