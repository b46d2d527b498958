"""The Lua scripts in ``lua/``, each behind a typed wrapper with named parameters.

A wrapper names every key its script touches (from ``Keys``: all in the deployment's hash tag, so
the scripts also run on a Redis Cluster) and passes the script's arguments in the order of the
named locals at its top. The helpers several scripts share (``lua/common.lua``) are written once
and prepended at load. Used by ``sandq.broker.admission`` and ``sandq.broker.slots``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any, ClassVar, cast

import redis

from sandq.broker.keys import BATCH, INTERACTIVE, Keys, Lane

Handed = tuple[str, str, str]
"""An execution handed out: its id, the token of the message that carries it, its parked entry."""


def source(name: str, common: bool) -> str:
    """The text of ``lua/<name>.lua``, after ``lua/common.lua`` if ``common``."""
    lua = files("sandq.broker").joinpath("lua")
    script = lua.joinpath(f"{name}.lua").read_text("utf-8")
    return lua.joinpath("common.lua").read_text("utf-8") + "\n" + script if common else script


class Script:
    """A script of ``lua/`` registered on a client (EVALSHA, loaded on first use), for one deployment."""

    name: ClassVar[str]
    uses_common: ClassVar[bool] = True

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._script = client.register_script(source(self.name, self.uses_common))

    def _run(self, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        return self._script(keys=keys, args=args)

    def _record(self) -> list[str]:
        """The keys ``hand_out`` (common.lua) writes, in the order the scripts declare them."""
        k = self.keys
        return [k.entries, k.handing, k.handing_tokens, k.claims, k.claim_expiry]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _handed(flat: Sequence[bytes | str]) -> list[Handed]:
    """``id, token, entry, id, token, entry, ...`` as triples."""
    texts = [_text(value) for value in flat]
    return list(zip(texts[0::3], texts[1::3], texts[2::3], strict=True))


class AdmitScript(Script):
    """``admit.lua``: count an execution as queued, or say which cap refuses it."""

    name = "admit"

    def __call__(
        self, *, execution_id: str, tenant: str, ttl_seconds: int, cap: int, tenant_cap: int,
        active_seconds: float,
    ) -> int:
        """0 admitted, 1 global cap reached, 2 tenant cap reached, 3 already admitted, 4 the
        tenant's first execution."""
        k = self.keys
        return int(self._run(
            [k.queued, k.queued_for(tenant), k.in_flight, k.tenants, k.active],
            [execution_id, tenant, ttl_seconds, cap, tenant_cap, active_seconds],
        ))


class AcquireScript(Script):
    """``acquire.lua``: take an in-flight slot, or park the execution in its tenant's line."""

    name = "acquire"

    def __call__(
        self, *, execution_id: str, tenant: str, lease_seconds: float, cap: int, tenant_cap: int,
        token: str, entry: str | None, lane: Lane, active_seconds: float, reserved: int,
    ) -> int:
        """0 acquired, 1 parked (``entry`` in ``lane``), 2 refused (no ``entry``), 3 a duplicate.

        ``token``: "" for a first delivery, else the token of the hand-off's message.
        """
        k = self.keys
        other = BATCH if lane == INTERACTIVE else INTERACTIVE
        return int(self._run(
            [k.in_flight, k.in_flight_for(tenant), k.queued, k.queued_for(tenant), k.parked,
             k.parked_for(tenant, lane), k.parked_for(tenant, other), k.parked_tenants, k.entries,
             k.handing, k.handing_tokens, k.claims, k.claim_expiry, k.active],
            [execution_id, tenant, lease_seconds, cap, tenant_cap, token, entry or "", active_seconds,
             reserved],
        ))


class RenewScript(Script):
    """``renew.lua``: extend the lease of a held slot."""

    name = "renew"

    def __call__(self, *, execution_id: str, tenant: str, lease_seconds: float) -> bool:
        """False if the lease had run out and its slot was taken back."""
        k = self.keys
        return bool(self._run([k.in_flight, k.in_flight_for(tenant)], [execution_id, lease_seconds]))


class HandoffScript(Script):
    """``handoff.lua``: hand free slots to parked executions, fairly."""

    name = "handoff"

    def parked_tenants(self) -> list[str]:
        """The tenants with parked executions now (the script serves only those it is given)."""
        members = cast("list[bytes | str]", self.redis.zrange(self.keys.parked_tenants, 0, -1))
        return [_text(tenant) for tenant in members]

    def __call__(
        self, *, tenants: Mapping[str, int], lease_seconds: float, cap: int, most: int,
        claim_seconds: int, active_seconds: float, reserved: int,
    ) -> tuple[list[Handed], int]:
        """The executions handed out (at most ``most``), and how many parked tenants were left out
        because they are not in ``tenants`` (tenant -> its in-flight cap) though slots remain."""
        k = self.keys
        per_tenant = [key for tenant in tenants for key in (
            k.in_flight_for(tenant), k.parked_for(tenant, INTERACTIVE), k.parked_for(tenant, BATCH),
            k.queued_for(tenant),
        )]
        reply = self._run(
            [k.in_flight, k.parked, k.parked_tenants, k.queued, k.active, *self._record(), *per_tenant],
            [lease_seconds, cap, most, claim_seconds, active_seconds, reserved,
             *(value for tenant, tenant_cap in tenants.items() for value in (tenant, tenant_cap))],
        )
        return _handed(reply[1:]), int(reply[0])


class RecoverScript(Script):
    """``recover.lua``: send again the hand-offs no worker claimed; forget expired claims."""

    name = "recover"

    def __call__(self, *, stale_seconds: float, claim_seconds: int, most_forgotten: int) -> list[Handed]:
        """The hand-offs unclaimed for ``stale_seconds``, each with a fresh token."""
        return _handed(self._run(self._record(), [stale_seconds, claim_seconds, most_forgotten]))


class UnparkScript(Script):
    """``unpark.lua``: take a cancelled execution out of its tenant's line, without a slot."""

    name = "unpark"

    def tenant_of(self, execution_id: str) -> str | None:
        """The tenant of a parked (or handed-off) execution, from its entry; None if it has none."""
        entry = self.redis.hget(self.keys.entries, execution_id)
        return None if entry is None else str(json.loads(entry)["tenant"])

    def __call__(self, *, execution_id: str, tenant: str, claim_seconds: int) -> Handed | None:
        """The execution, handed out to be sent at once; None if it was not parked in ``tenant``'s line."""
        k = self.keys
        reply = self._run(
            [k.parked, k.parked_tenants, k.parked_for(tenant, INTERACTIVE), k.parked_for(tenant, BATCH),
             *self._record()],
            [execution_id, tenant, claim_seconds],
        )
        return _handed(reply)[0] if reply else None


class SentScript(Script):
    """``sent.lua``: forget a hand-off once its message is sent (unless claimed or sent again)."""

    name = "sent"
    uses_common = False

    def __call__(self, *, execution_id: str, token: str) -> None:
        """Forget it if ``token`` is still the one its message carries."""
        k = self.keys
        self._run([k.entries, k.handing, k.handing_tokens], [execution_id, token])
