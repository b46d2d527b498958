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
        return self._key("queued", tenant)

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
    def waiting(self) -> str:
        """Sorted set of tenants recently refused a slot, scored by time."""
        return self._key("waiting")

    @property
    def interactive_waiting(self) -> str:
        """Set (with a short expiry) while an interactive execution waits for a slot."""
        return self._key("waiting", "interactive")

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

    @property
    def simulated_runs(self) -> str:
        """List of runs recorded by the simulated backend (benchmarks only)."""
        return self._key("simulated", "runs")
