"""Helpers for the reliability tests: probed worker processes, crash bookkeeping, leftovers."""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from sandq.sandbox.gvisor.sandbox import SANDBOX_PREFIX
from sandq.settings import Settings
from tests.conftest import WorkerProcess, listed_sandboxes
from tests.integration.reliability.probe import probe_key

RESULTS_ENV = "SANDQ_REDELIVERY_RESULTS"
"""Set by ``benchmarks/redelivery.py``: the file the measured redelivery times are merged into."""
ROUNDS_ENV = "SANDQ_REDELIVERY_ROUNDS"
"""Set by ``benchmarks/redelivery.py``: kill rounds (the suite runs a few, the benchmark many)."""


class ProbedWorker(WorkerProcess):
    """A real ``sandq worker`` process whose task starts are recorded (see ``probe.py``)."""

    ready_seconds = 120.0
    stop_seconds = 90.0

    def __init__(self, settings: Settings, log: Path, concurrency: int, pool: str = "threads") -> None:
        super().__init__(
            settings,
            log,
            args=("-m", "tests.integration.reliability.probe", "worker", f"--concurrency={concurrency}",
                  f"--pool={pool}"),
        )

    def pool_pids(self) -> set[int]:
        """The worker's pool processes."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return {int(pid) for pid in out.stdout.split()}

    def pids(self) -> set[int]:
        """The main process and its pool processes."""
        return {self.proc.pid, *self.pool_pids()}

    def kill_tree(self) -> set[int]:
        """SIGKILL the main process and its pool processes at once, as a crash would; return them."""
        pids = self.pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        return pids


@dataclass(frozen=True)
class Start:
    """One task start, as the probe recorded it."""

    id: str
    pid: int
    at: float
    retries: int


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: when, which processes, and of what kind."""

    at: float
    pids: frozenset[int]
    kind: str


@dataclass
class Crashes:
    """The starts the probe saw and the kills the test made; judges redeliveries from them."""

    client: redis.Redis
    queue: str
    kills: list[Kill] = field(default_factory=list)

    def starts(self) -> dict[str, list[Start]]:
        by_id: dict[str, list[Start]] = {}
        for raw in self.client.lrange(probe_key(self.queue), 0, -1):
            start = Start(**json.loads(raw))
            by_id.setdefault(start.id, []).append(start)
        for starts in by_id.values():
            starts.sort(key=lambda s: s.at)
        return by_id

    def started(self, execution_id: str) -> Start | None:
        """The latest start of ``execution_id``, if any."""
        starts = self.starts().get(execution_id)
        return starts[-1] if starts else None

    def kill(self, kind: str, do_kill: Callable[[], set[int]]) -> Kill:
        at = time.time()
        record = Kill(at, frozenset(do_kill()), kind)
        self.kills.append(record)
        return record

    def unexplained_starts(self) -> list[tuple[Start, Start]]:
        """Pairs (previous, next) of starts of one id with no kill of the previous one in between.

        Such a pair is an execution run twice while a live worker held it (retries of
        infrastructure faults, which raise ``retries``, are not counted).
        """
        bad = []
        for starts in self.starts().values():
            for prev, nxt in itertools.pairwise(starts):
                killed = any(prev.pid in k.pids and prev.at < k.at < nxt.at for k in self.kills)
                if not killed and nxt.retries <= prev.retries:
                    bad.append((prev, nxt))
        return bad

    def delays(self) -> dict[str, list[float]]:
        """Seconds from each kill to the next start of every execution it interrupted, by kind."""
        out: dict[str, list[float]] = {}
        starts = self.starts()
        for kill in self.kills:
            for runs in starts.values():
                before = [s for s in runs if s.at < kill.at]
                after = [s for s in runs if s.at > kill.at]
                if before and before[-1].pid in kill.pids and after:
                    out.setdefault(kill.kind, []).append(after[0].at - kill.at)
        return out


def unacked_of(client: redis.Redis, queues: set[str]) -> list[str]:
    """Delivery tags in kombu's ``unacked`` hash whose message was routed to one of ``queues``."""
    tags = []
    for tag, raw in client.hgetall("unacked").items():
        _message, _exchange, routing_key = json.loads(raw)
        if routing_key in queues:
            tags.append(tag.decode())
    return tags


def sandboxes(settings: Settings) -> tuple[list[str], list[str]]:
    """(what ``runsc list`` shows under the test's root, the sandboxes' bundles in the bundle directory)."""
    listed = listed_sandboxes(settings)
    entries = settings.bundle_dir.iterdir() if settings.bundle_dir.exists() else iter(())
    bundles = sorted(p.name for p in entries if p.name.startswith(SANDBOX_PREFIX))
    return listed, bundles


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout} s: {what}")


def summary(delays: list[float]) -> dict[str, Any]:
    """min/median/max (seconds, rounded) and the number of measurements."""
    return {
        "n": len(delays),
        "min": round(min(delays), 2),
        "median": round(statistics.median(delays), 2),
        "max": round(max(delays), 2),
    }


def rounds(default: int) -> int:
    """How many kill rounds to run: ``default`` in the suite, more when the benchmark asks."""
    return int(os.environ.get(ROUNDS_ENV, default))


def record_results(section: str, values: dict[str, Any]) -> None:
    """Print ``values``; when the benchmark runs the test, merge them under ``section`` into its file."""
    print(f"redelivery {section}: {json.dumps(values)}")
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return
    path = Path(target)
    current = json.loads(path.read_text()) if path.exists() else {}
    current[section] = values
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
