"""The scripts on a Redis Cluster (one node serving every slot), through a cluster client: each
call's keys must hash to one slot, or the client refuses it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from sandq.broker.keys import Keys
from tests.conftest import RedisServer, free_port
from tests.unit.broker.lua.conftest import ACQUIRED, CLAIM, DUPLICATE, PARKED, Lua


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    directory: Path = tmp_path_factory.mktemp("cluster")
    server = RedisServer(  # the bus port too is a free one: the default (port + 10000) may not exist
        directory, "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
        "--cluster-port", str(free_port()),
    )
    try:
        node = redis.Redis(port=server.port, decode_responses=True)
        node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while "cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the one-node cluster did not come up"
            time.sleep(0.05)
        client = RedisCluster(host="127.0.0.1", port=server.port)
        yield client
        client.close()
    finally:
        server.stop()


def test_a_whole_cycle_runs_on_a_cluster(cluster: RedisCluster) -> None:
    lua = Lua(cluster, Keys("clustered"), cap=1)  # type: ignore[arg-type]  # a cluster client is a client
    assert lua.admit("p", "t") == 4
    assert lua.acquire("x", "z") == ACQUIRED
    assert lua.park("p", "t") == PARKED
    assert lua.renew_script(execution_id="x", tenant="z", lease_seconds=30) is True
    lua.release("x", "z")
    ((execution_id, token, _),), left_out = lua.hand_off()
    assert (execution_id, left_out) == ("p", 0)
    lua.sent_script(execution_id="p", token=token)
    assert lua.acquire("p", "t") == DUPLICATE
    assert lua.acquire("p", "t", token=token) == ACQUIRED
    assert lua.recover_script(stale_seconds=0, claim_seconds=CLAIM, most_forgotten=10) == []
    assert lua.park("q", "t") == PARKED
    assert lua.unpark_script.tenant_of("q") == "t"
    assert lua.unpark_script(execution_id="q", tenant="t", claim_seconds=CLAIM) is not None


def test_without_the_hash_tag_one_deployments_keys_would_be_refused(cluster: RedisCluster) -> None:
    script = cluster.register_script("return redis.call('GET', KEYS[1])")
    assert script(keys=[Keys("q").queued, Keys("q").in_flight]) is None
    with pytest.raises(redis.RedisClusterException, match="same key slot"):
        script(keys=["sandq:q:queued", "sandq:q:inflight"])  # the names before the tag
