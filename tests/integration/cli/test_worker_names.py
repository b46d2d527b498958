"""Worker node names are unique per process: ``sandq status`` sees every worker of a host."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

from tests.conftest import RedisServer, make_settings, settings_env
from tests.integration.cli.conftest import Sandq
from tests.integration.queue.conftest import SimWorker


def test_two_workers_on_one_host_are_both_seen(
    sandq: Sandq, redis_server: RedisServer, tmp_path: Path
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    settings = make_settings(redis_server.url, tmp_path, backend="simulated", queue=queue)
    workers = [SimWorker(settings, tmp_path / f"worker-{n}.log", concurrency=1) for n in range(2)]
    try:
        for worker in workers:
            worker.wait_ready()
        env = settings_env(settings)
        status = sandq("status", "--json", env=env)
        health = sandq("healthcheck", "--timeout", "10", env=env)
    finally:
        for worker in workers:
            worker.stop()
    assert status.returncode == 0, status.stderr
    host = socket.gethostname()
    names = {f"sandq-{worker.proc.pid}@{host}" for worker in workers}
    assert names <= set(json.loads(status.stdout)["workers"])  # other tests' workers may share this Redis
    logs = status.stderr + "".join(worker.log.read_text() for worker in workers)
    assert "DuplicateNodenameWarning" not in logs and "duplicate" not in logs.lower()
    assert health.returncode == 0, health.stderr
    [reply] = json.loads(health.stdout)  # the first worker of this host to answer
    [(name, answer)] = reply.items()
    assert name.startswith("sandq-") and name.endswith(f"@{host}") and answer == {"ok": "pong"}


def test_healthcheck_fails_without_a_worker_on_this_host(sandq: Sandq, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # no worker uses it
    try:
        proc = sandq("healthcheck", "--timeout", "0.5", env={"SANDQ_REDIS_URL": server.url})
    finally:
        server.stop()
    assert proc.returncode == 1
    assert f"no worker sandq-*@{socket.gethostname()} answered within 0.5 s" in proc.stderr
