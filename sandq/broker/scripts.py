"""The Lua scripts in ``lua/``, registered on a Redis client."""

from __future__ import annotations

from importlib.resources import files

import redis
from redis.commands.core import Script


def load_script(client: redis.Redis, name: str) -> Script:
    """Register ``sandq/broker/lua/<name>.lua`` on ``client`` (EVALSHA, loaded on first use)."""
    return client.register_script(files("sandq.broker").joinpath("lua", f"{name}.lua").read_text("utf-8"))
