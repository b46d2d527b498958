"""``sandq worker``, and what looks after workers: ``sandq healthcheck`` and ``sandq janitor``."""

from __future__ import annotations

import json
import os
import socket
from typing import Annotated, Literal

import typer

from sandq.cli.console import err
from sandq.cli.preflight import redis_settings, require_kubernetes, require_sandbox_env
from sandq.settings import Settings

NODE_PREFIX = "sandq"


def node_name() -> str:
    """This process's Celery node name, ``sandq-<pid>@<host>``: one per worker process.

    Unique names keep each worker's replies apart, so ``sandq status`` and broadcasts (cancel,
    add_consumer) see every worker even when several run on one host.
    """
    return f"{NODE_PREFIX}-{os.getpid()}@{socket.gethostname()}"


def this_hosts_workers() -> str:
    """A glob matching the node name of every worker on this host."""
    return f"{NODE_PREFIX}-*@{socket.gethostname()}"


def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Executions at once (default SANDQ_CONCURRENCY).")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    pool: Annotated[
        str | None,
        typer.Option(help="Celery pool: threads (the default: one process, one warm pool), or prefork."),
    ] = None,
    log_format: Annotated[
        Literal["json", "text"], typer.Option(help="json: one object per line, with execution ids.")
    ] = "json",
) -> None:
    """Start a worker that runs executions from the queue (and from each tenant's queue).

    Its Celery node name is sandq-<pid>@<host>. It serves Prometheus metrics on
    SANDQ_METRICS_PORT (9808; 0 turns them off).
    """
    from sandq.logging_setup import use_for_celery_worker  # noqa: PLC0415
    from sandq.worker.metrics_server import serve_metrics  # noqa: PLC0415

    settings = redis_settings(ping=False)  # Celery waits for Redis to come up
    use_for_celery_worker(log_format, loglevel)
    serve_metrics(settings)  # before anything imports prometheus_client (the backends count too)
    if settings.backend == "gvisor":
        require_sandbox_env(settings)  # built here once, before any sandbox is started
    if settings.backend == "kubernetes":
        require_kubernetes(settings, "SANDQ_BACKEND=kubernetes")
    # Executions mostly wait (on a sandbox's pipes, on the shared watch of Jobs): threads in one
    # process hold them, and share one warm pool per host (see docs/benchmarks.md for the figures).
    pool = pool or "threads"
    from sandq.broker.app import celery_app  # noqa: PLC0415 (the worker imports its tasks)

    celery_app.worker_main(
        [
            *(["--quiet"] if log_format == "json" else []),  # no banner among the JSON lines
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency or settings.concurrency}",
            f"--pool={pool}",
            "--queues",
            settings.queue,
            *(["--task-events"] if settings.task_events else []),
            "--without-gossip",
            "--without-mingle",
            f"--hostname={node_name()}",
        ]
    )


def healthcheck(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the worker's answer.")] = 5.0,
) -> None:
    """Exit 0 if a worker of this host answers a Celery ping (for Kubernetes probes).

    Only workers named sandq-*@<this host> are asked, and the first answer ends the wait.
    """
    redis_settings()
    from sandq.broker.app import celery_app  # noqa: PLC0415

    pattern = this_hosts_workers()
    replies = celery_app.control.ping(timeout=timeout, pattern=pattern, matcher="glob", limit=1)
    if not replies:
        err.print(f"no worker {pattern} answered within {timeout} s")
        raise typer.Exit(1)
    typer.echo(json.dumps(replies))


def janitor() -> None:
    """Delete sandq Jobs (and so their ConfigMaps) left past their deadline by crashed workers."""
    from sandq.sandbox.kubernetes import run_janitor  # noqa: PLC0415

    settings = Settings()
    require_kubernetes(settings, "sandq janitor")
    typer.echo(f"deleted {run_janitor(settings)} Job(s)")
