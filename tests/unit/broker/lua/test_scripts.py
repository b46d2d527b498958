"""The loader and the rules every script keeps: named locals at the top, helpers from common.lua,
and every key a script touches declared in its KEYS, all in one Redis Cluster slot."""

from __future__ import annotations

import re
import threading
from importlib.resources import files

import pytest
import redis
from redis.crc import key_slot

from sandq.broker import scripts
from sandq.broker.scripts import Script, source
from tests.unit.broker.lua.conftest import ACQUIRED, CLAIM, PARKED, Lua

LUA = files("sandq.broker").joinpath("lua")
COMMON = LUA.joinpath("common.lua").read_text("utf-8")
HELPERS = set(re.findall(r"^local function (\w+)", COMMON, re.MULTILINE))
WRAPPERS = {cls.name: cls for cls in vars(scripts).values()
            if isinstance(cls, type) and issubclass(cls, Script) and cls is not Script}
NAMES = sorted(p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua")
               and p.name != "common.lua")


def test_each_script_has_one_wrapper() -> None:
    assert sorted(WRAPPERS) == NAMES == ["acquire", "admit", "handoff", "recover", "renew", "sent", "unpark"]


@pytest.mark.parametrize("name", NAMES)
def test_keys_and_arguments_are_named_at_the_top_only(name: str) -> None:
    text = LUA.joinpath(f"{name}.lua").read_text("utf-8")
    header, _, body = text.partition("\n\n")
    assert re.search(r"^local \w+ = (tonumber\()?(KEYS|ARGV)\[1\]", header, re.MULTILINE)
    assert not re.search(r"(KEYS|ARGV)\[\d", body)  # no position in the body
    assert not re.search(r"(KEYS|ARGV)\[", COMMON)  # helpers are given their keys


@pytest.mark.parametrize("name", NAMES)
def test_a_script_gets_common_lua_if_and_only_if_it_uses_its_helpers(name: str, raw: redis.Redis) -> None:
    text = LUA.joinpath(f"{name}.lua").read_text("utf-8")
    called = {helper for helper in HELPERS if re.search(rf"\b{helper}\(", text)}
    declared = re.search(r"^-- Uses common\.lua: (.*)\.$", text, re.MULTILINE)
    assert called == (set(declared.group(1).split(", ")) if declared else set())
    assert WRAPPERS[name].uses_common is bool(called)
    assert source(name, bool(called)).endswith(text)
    assert raw.script_load(source(name, bool(called)))  # it compiles


def scenario(lua: Lua) -> None:
    """Every script, through the branches that write."""
    lua.admit("p", "t")
    assert lua.acquire("x", "z", cap=1) == ACQUIRED
    assert lua.park("p", "t", cap=1) == PARKED
    assert lua.park("q", "t", "interactive", cap=1) == PARKED
    lua.renew_script(execution_id="x", tenant="z", lease_seconds=30)
    lua.release("x", "z")
    ((_, token, _),), _ = lua.hand_off(cap=1)
    lua.sent_script(execution_id="q", token=token)
    lua.backdate(lua.keys.handing, "q")
    lua.backdate(lua.keys.claim_expiry, "q")
    lua.recover_script(stale_seconds=30, claim_seconds=CLAIM, most_forgotten=10)
    assert lua.unpark_script(execution_id="p", tenant="t", claim_seconds=CLAIM) is not None
    assert lua.acquire("q", "t", cap=1, token=lua.hget(lua.keys.handing_tokens, "q")) == ACQUIRED


def test_every_key_a_script_touches_is_declared_in_its_keys(raw: redis.Redis, lua: Lua) -> None:
    monitored: list[tuple[str, str]] = []
    with raw.monitor() as monitor:
        started = threading.Event()

        def listen() -> None:
            started.set()
            while (command := monitor.next_command())["command"] != "ECHO end-of-scenario":
                monitored.append((command["client_type"], command["command"]))

        listener = threading.Thread(target=listen)
        listener.start()
        started.wait()
        scenario(lua)
        lua.raw.echo("end-of-scenario")
        listener.join(10)
    declared: list[str] = []
    touched: set[str] = set()
    for client_type, command in monitored:
        name, *args = command.split(" ")
        if name.upper() == "EVALSHA":
            declared = args[2 : 2 + int(args[1])]
            assert len({key_slot(key.encode()) for key in declared}) == 1, declared
        elif client_type == "lua":
            try:
                keys = set(raw.command_getkeys(name, *args))
            except redis.ResponseError:  # a command without keys (TIME)
                keys = set()
            assert keys <= set(declared), (command, declared)
            touched.add(name.upper())
    assert {"TIME", "ZADD", "RPUSH", "LPOP", "HSET", "SREM", "LREM", "HDEL", "ZREMRANGEBYSCORE"} <= touched
