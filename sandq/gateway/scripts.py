"""The gateway's Lua scripts, registered on an async Redis client."""

from __future__ import annotations

from importlib.resources import files

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

_LUA = files("sandq.gateway")


def claim_due(client: aioredis.Redis) -> AsyncScript:
    """``claim_due.lua``: take the due members of a sorted set, pushing each one's score to a lease's end."""
    return client.register_script(_LUA.joinpath("claim_due.lua").read_text("utf-8"))


def batch_done(client: aioredis.Redis) -> AsyncScript:
    """``batch_done.lua``: count an ended execution of a batch by its status, once."""
    return client.register_script(_LUA.joinpath("batch_done.lua").read_text("utf-8"))
