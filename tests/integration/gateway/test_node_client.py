"""A client in another language: a Node.js script (built-in fetch only) submits code and reads the SSE."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.gateway.conftest import Stack

SCRIPT = Path(__file__).with_name("node_client.mjs")


def test_node_submits_and_reads_the_event_stream(stack: Stack) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed for the Node.js client test (apt-get install nodejs)")
    done = subprocess.run(
        [node, str(SCRIPT), stack.url, stack.new_key("nodejs")], capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    *chunks, result = answer["events"]
    assert {c["event"] for c in chunks} == {"stdout"} and result["event"] == "result"
    assert "".join(c["data"] for c in chunks) == "hello from node\nbye\n"
    assert result["data"]["id"] == answer["id"] and result["data"]["status"] == "succeeded"
    assert result["data"]["tenant"] == "nodejs"
    hello = next(c for c in chunks if "hello" in c["data"])
    assert result["at"] - hello["at"] > 500, "the output came only with the result"
