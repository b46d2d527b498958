"""The ``sandq`` command line: worker, run, doctor, healthcheck."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sandq.contract import ExecutionRequest, ExecutionResult, Status
from sandq.settings import Settings

app = typer.Typer(help="Run untrusted code in gVisor sandboxes through a Redis queue.", no_args_is_help=True)
err = Console(stderr=True)

EXIT_CODES = {
    Status.TIMED_OUT: 124,
    Status.OOM_KILLED: 137,
    Status.OUTPUT_LIMIT_EXCEEDED: 125,
    Status.REJECTED: 65,
    Status.INFRASTRUCTURE_ERROR: 70,
    Status.CANCELLED: 130,
}
"""Process exit code of ``sandq run`` for each status that is not the program's own."""


def exit_code_for(result: ExecutionResult) -> int:
    """``sandq run``'s exit code: the program's own, or one that names the status."""
    if result.status in (Status.SUCCEEDED, Status.FAILED):
        return result.exit_code if result.exit_code is not None else 1
    return EXIT_CODES[result.status]


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Executions at once (default SANDQ_CONCURRENCY).")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Start a worker that runs executions from the queue."""
    from sandq.broker.app import celery_app  # noqa: PLC0415 (the worker imports its tasks)

    settings = Settings()
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency or settings.concurrency}",
            "--queues",
            settings.queue,
            "--task-events",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=sandq@{socket.gethostname()}",
        ]
    )


def _read_code(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    return Path(file).read_text(encoding="utf-8")


@app.command()
def run(
    file: Annotated[str, typer.Argument(help="Python file to run, or - for standard input.")] = "-",
    timeout: Annotated[int, typer.Option(help="Seconds before the sandbox is killed.")] = 300,
    mem_limit: Annotated[str, typer.Option(help="Memory limit, e.g. 512Mi.")] = "512Mi",
    cpu_limit: Annotated[str, typer.Option(help="CPU limit, e.g. 500m.")] = "500m",
    tenant: Annotated[str, typer.Option(help="Tenant the execution is billed to.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for the result.")] = None,
) -> None:
    """Run code through the queue and print its result; exit with the program's code."""
    from sandq.broker.client import Client, ResultTimeout  # noqa: PLC0415

    raw: dict[str, Any] = {
        "code": _read_code(file),
        "timeout_seconds": timeout,
        "mem_limit": mem_limit,
        "cpu_limit": cpu_limit,
        "tenant": tenant,
    }
    for field, limit in (("mem_requested", mem_limit), ("cpu_requested", cpu_limit)):
        default = ExecutionRequest.model_fields[field].default
        raw[field] = _smaller(default, limit)
    client = Client.from_env()
    try:
        handle = client.submit(raw)
        result = handle.result(timeout=wait if wait is not None else timeout + 120)
    except ResultTimeout as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(70) from None
    finally:
        client.close()
    _print_result(result, as_json)
    raise typer.Exit(exit_code_for(result))


def _smaller(default: object, limit: str) -> str:
    from kubernetes.utils.quantity import parse_quantity  # noqa: PLC0415

    try:
        return limit if parse_quantity(limit) < parse_quantity(str(default)) else str(default)
    except ValueError:
        return str(default)  # the limit itself is invalid; validation names it


def _print_result(result: ExecutionResult, as_json: bool) -> None:
    if as_json:
        typer.echo(result.model_dump_json())
        return
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.stdout_truncated or result.stderr_truncated:
        err.print("[yellow]output truncated at the limit[/yellow]")
    for f in result.output_files:
        err.print(f"[cyan]output file[/cyan] {f.name} ({len(f.content)} bytes, {f.mime_type})")
    if result.status not in (Status.SUCCEEDED, Status.FAILED) or result.error:
        err.print(f"[bold]{result.status.value}[/bold]: {result.error or ''}")


@app.command()
def doctor() -> None:
    """Check Redis, runsc and Kubernetes configuration; say what is missing and how to fix it."""
    from sandq.doctor import run_checks  # noqa: PLC0415

    ok = True
    for check in run_checks(Settings()):
        mark = (
            "[green]ok[/green]"
            if check.ok
            else ("[red]FAIL[/red]" if check.required else "[yellow]--[/yellow]")
        )
        err.print(f"{mark} {check.name}: {check.detail}")
        ok = ok and (check.ok or not check.required)
    raise typer.Exit(0 if ok else 1)


@app.command()
def healthcheck(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the worker's answer.")] = 5.0,
) -> None:
    """Exit 0 if this host's worker answers a Celery ping (for Kubernetes probes)."""
    from sandq.broker.app import celery_app  # noqa: PLC0415

    name = f"sandq@{socket.gethostname()}"
    replies = celery_app.control.ping(destination=[name], timeout=timeout)
    if not any(name in reply for reply in replies or []):
        err.print(f"worker {name} did not answer within {timeout} s")
        raise typer.Exit(1)
    typer.echo(json.dumps(replies))
