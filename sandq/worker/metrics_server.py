"""Serve the worker's ``/metrics`` from its main process, summed over the prefork pool.

Celery runs tasks in forked pool processes, each with its own memory, and restarts them at
will. prometheus_client's multiprocess mode is the documented way out: every process writes
its samples to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` and the main process's
HTTP server merges the files at each scrape. The variable must be set before
prometheus_client is first imported (it picks its value class at import), and the directory
must start empty, so ``serve_metrics`` runs first thing in ``sandq worker``.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from sandq.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> Path:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory: the given one emptied, else a new one."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="sandq-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    atexit.register(_remove_in, os.getpid(), path)
    return path


def _remove_in(owner: int, path: Path) -> None:
    """Remove ``path`` at exit of the process that made it (not of its forked children)."""
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def serve_metrics(settings: Settings) -> None:
    """Serve ``/metrics`` on ``settings.metrics_port`` in a thread, unless it is None or 0.

    Metrics that cannot be served (port in use, prometheus_client imported too early) are
    logged as an error and the worker runs on without them.
    """
    if not settings.metrics_port:
        return
    if "prometheus_client" in sys.modules:
        log.error("metrics off: prometheus_client was imported before %s could be set", MULTIPROC_ENV)
        return
    path = prepare_multiprocess_dir()
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415 (after the env)

    from sandq.worker.metrics import QueueCollector, SettledFilesCollector  # noqa: PLC0415 (after the env)

    registry = CollectorRegistry()
    SettledFilesCollector(registry, str(path))
    registry.register(QueueCollector(settings))
    try:
        start_http_server(settings.metrics_port, registry=registry)
    except OSError as error:
        log.error("metrics: cannot serve on port %s: %s", settings.metrics_port, error)
        return
    log.info("metrics: serving /metrics on port %s", settings.metrics_port)
