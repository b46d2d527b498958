"""What sharing one warm pool per host would cost each way: figures for choosing the worker's pool.

Prints JSON. Run as root; starts its own redis-server and workers.

- ``scm_rights``: a pool owner process handing a sandbox's three pipes to the process that runs
  the job (``socket.send_fds``): the round trip of one hand-over, the rest of such a design left
  aside (the exit status, which tells an OOM kill, stays with the owner, the parent of ``runsc``).
- ``worker_memory``: the PSS of an idle worker (no warm pool) with ``--pool threads`` and with
  ``--pool prefork``, at the same concurrency.

Latency, throughput and CPU of the two Celery pools come from ``benchmarks/local.py --pool``.
Usage: python benchmarks/pool_options.py [--concurrency 8] [--handovers 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.local import tree_pss_kib
from sandq import Client
from tests.conftest import RedisServer, WorkerProcess, make_settings


def scm_rights(handovers: int) -> dict[str, float]:
    """Round trip of asking a pool owner for a sandbox and receiving its three pipe ends."""
    owner, job = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child == 0:  # the pool owner: hands out three fresh pipe ends per request
        job.close()
        while owner.recv(16):
            pipes = [os.pipe() for _ in range(3)]
            socket.send_fds(owner, [b"sq-0123456789abcdef"], [pipes[0][1], pipes[1][0], pipes[2][0]])
            for read, write in pipes:
                os.close(read)
                os.close(write)
        os._exit(0)
    owner.close()
    times = []
    for _ in range(handovers):
        start = time.perf_counter()
        job.send(b"take")
        _, fds, _, _ = socket.recv_fds(job, 64, 3)
        times.append(time.perf_counter() - start)
        for fd in fds:
            os.close(fd)
    job.close()
    os.waitpid(child, 0)
    return {"handovers": handovers, "p50_us": round(statistics.median(times) * 1e6, 1),
            "p99_us": round(sorted(times)[int(0.99 * (len(times) - 1))] * 1e6, 1)}


def worker_memory(base: Path, redis: RedisServer, pool: str, concurrency: int) -> dict[str, float]:
    """PSS of an idle worker and its pool processes, without warm sandboxes."""
    settings = make_settings(redis.url, base / pool, concurrency=concurrency, warm_pool_max=0)
    client = Client(settings)
    args = ("-m", "sandq", "worker", "--loglevel", "WARNING", "--pool", pool)
    worker = WorkerProcess(settings, base / f"worker-{pool}.log", args=args)
    try:
        worker.wait_ready(client)
        time.sleep(3)
        pss = tree_pss_kib(worker.proc.pid) / 1024
    finally:
        worker.stop()
        client.close()
    return {"pool": pool, "concurrency": concurrency, "pss_mib": round(pss, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--handovers", type=int, default=2000)
    args = parser.parse_args()
    report: dict[str, object] = {"benchmark": "pool_options", "scm_rights": scm_rights(args.handovers)}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis = RedisServer(base)
        try:
            pools = ("threads", "prefork")
            report["worker_memory"] = [worker_memory(base, redis, p, args.concurrency) for p in pools]
        finally:
            redis.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
