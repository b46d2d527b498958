"""The Redis keys of the gateway, namespaced by the deployment's queue name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BatchPart = Literal["", "ids", "unsent", "unfinished"]


@dataclass(frozen=True)
class GatewayKeys:
    """Key names for one deployment (``namespace`` is ``Settings.queue``)."""

    namespace: str

    def _key(self, *parts: str) -> str:
        return ":".join(("sandq", self.namespace, "gateway", *parts))

    def api_key(self, key_id: str) -> str:
        """Hash of one API key: its HMAC digest, tenant, creation time and revocation."""
        return self._key("api-key", key_id)

    @property
    def api_key_ids(self) -> str:
        """Set of every API key id."""
        return self._key("api-keys")

    @property
    def rate_limit_prefix(self) -> str:
        """Prefix of the rate limiter's keys (one per API key and limit)."""
        return self._key("rate")

    def webhook_secret(self, tenant: str) -> str:
        """Hash of a tenant's webhook secret generation and the end of the old one's grace."""
        return self._key("webhook-secret", tenant)

    def delivery(self, delivery_id: str) -> str:
        """One webhook delivery (JSON): target, body and state."""
        return self._key("delivery", delivery_id)

    @property
    def deliveries_due(self) -> str:
        """Sorted set of webhook deliveries scored by when they are next due (or their lease ends)."""
        return self._key("deliveries-due")

    def batch(self, batch_id: str, part: BatchPart = "") -> str:
        """A batch's keys. ``""``: hash of its tenant, total and callback, and of its ended executions
        counted by status; ``ids``: list of its execution ids in request order; ``unsent``: list of
        its requests (JSON, with their ids) not yet admitted to the queue; ``unfinished``: set of
        its execution ids that have not ended."""
        return self._key("batch", batch_id, part) if part else self._key("batch", batch_id)

    def execution(self, execution_id: str) -> str:
        """An execution submitted through the gateway (JSON): its tenant, streaming, callback, batch."""
        return self._key("execution", execution_id)

    def watched(self, what: Literal["callbacks", "batches-open"]) -> str:
        """Sorted sets scored by when a gateway next looks at each member: ``callbacks``, the
        executions whose result a webhook awaits; ``batches-open``, the batches not yet ended."""
        return self._key(what)
