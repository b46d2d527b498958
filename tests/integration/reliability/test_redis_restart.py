"""A Redis restart in the middle of a load: with AOF, nothing accepted is lost, everyone reconnects."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sandq import Client, ExecutionRequest, Status
from tests.conftest import RedisServer, make_settings
from tests.integration.reliability.conftest import ProbedWorker

SUBMISSIONS = 24


def test_a_redis_restart_loses_nothing_accepted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    settings = make_settings(
        server.url, tmp_path, redelivery_seconds=5, concurrency=2, warm_pool_min=1, warm_pool_max=1
    )
    client = Client(settings)
    worker = ProbedWorker(settings, tmp_path / "worker.log", concurrency=2)
    accepted: list[str] = []
    refused: list[tuple[str, BaseException]] = []

    def submit_all() -> None:
        for n in range(SUBMISSIONS):
            execution_id = f"load-{n}"
            code = f"import time\ntime.sleep({n % 3 * 0.5})\nprint('{execution_id}')"
            try:
                client.submit(ExecutionRequest(code=code, timeout_seconds=30), execution_id=execution_id)
            except Exception as error:  # a refusal is recorded, and judged below
                refused.append((execution_id, error))
            else:
                accepted.append(execution_id)
            time.sleep(0.25)

    try:
        worker.wait_ready()
        submitter = threading.Thread(target=submit_all)
        submitter.start()
        while len(accepted) < SUBMISSIONS // 3:
            time.sleep(0.05)
        server.stop()  # SIGTERM: Redis shuts down, its AOF fsynced
        time.sleep(1.5)
        server.start()  # same port, same directory: the AOF is loaded
        submitter.join(120)
        for execution_id in accepted:
            result = client.wait(execution_id, timeout=120)
            assert (result.status, result.stdout) == (Status.SUCCEEDED, f"{execution_id}\n"), result
        assert refused == []
        # The worker reconnected by itself and still takes new work.
        assert worker.proc.poll() is None
        after = client.run(ExecutionRequest(code="print('after')"), timeout=120)
        assert (after.status, after.stdout) == (Status.SUCCEEDED, "after\n")
    finally:
        worker.stop()
        client.close()
        server.stop()
