"""The ``sandq`` command line: worker, run, doctor, healthcheck."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console

from sandq.contract import DEFAULT_TENANT, ExecutionRequest, ExecutionResult, Status
from sandq.gateway.cli import keys_app, serve
from sandq.settings import Settings

if TYPE_CHECKING:
    from sandq.broker.output import OutputChunk

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
    pool: Annotated[
        str | None,
        typer.Option(help="Celery pool: prefork, or threads (the default with SANDQ_BACKEND=kubernetes)."),
    ] = None,
    log_format: Annotated[
        Literal["json", "text"], typer.Option(help="json: one object per line, with execution ids.")
    ] = "json",
) -> None:
    """Start a worker that runs executions from the queue (and from each tenant's queue).

    It serves Prometheus metrics on SANDQ_METRICS_PORT (9808; 0 turns them off).
    """
    from sandq.logging_setup import use_for_celery_worker  # noqa: PLC0415
    from sandq.worker.metrics_server import serve_metrics  # noqa: PLC0415

    settings = Settings()
    # Kubernetes executions mostly wait on the shared watch: threads hold hundreds per process.
    pool = pool or ("threads" if settings.backend == "kubernetes" else "prefork")
    use_for_celery_worker(log_format, loglevel)
    serve_metrics(settings)  # before anything imports prometheus_client
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
    tenant: Annotated[str, typer.Option(help="Tenant the execution is billed to.")] = DEFAULT_TENANT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for the result.")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend for --dry-run: kubernetes.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the manifests it would create; contact nothing.")
    ] = False,
    stream: Annotated[
        bool, typer.Option(help="Print the output as the code writes it (not with --json).")
    ] = True,
) -> None:
    """Run code through the queue and print its result; exit with the program's code."""
    from sandq.client.client import Client, ResultTimeout  # noqa: PLC0415

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
    if dry_run:
        _dry_run(raw, backend or Settings().backend)
        return
    client = Client.from_env()
    live = stream and not as_json
    seconds = wait if wait is not None else timeout + 120
    try:
        result = client.run(raw, seconds, on_output=_print_chunk) if live else client.run(raw, seconds)
    except ResultTimeout as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(70) from None
    finally:
        client.close()
    _print_result(result, as_json, printed=live)
    raise typer.Exit(exit_code_for(result))


def _print_chunk(chunk: OutputChunk) -> None:
    out = sys.stdout if chunk.stream == "stdout" else sys.stderr
    out.write(chunk.data)
    out.flush()


def _dry_run(raw: dict[str, Any], backend: str) -> None:
    """Print the ConfigMap and Job a kubernetes run would create, as YAML, without a cluster."""
    if backend != "kubernetes":
        err.print("[red]--dry-run needs --backend kubernetes[/red]")
        raise typer.Exit(2)
    import uuid  # noqa: PLC0415

    from sandq.sandbox.kubernetes import dry_run_yaml  # noqa: PLC0415

    typer.echo(dry_run_yaml(ExecutionRequest.model_validate(raw), Settings(), uuid.uuid4().hex), nl=False)


@app.command()
def janitor() -> None:
    """Delete sandq Jobs (and so their ConfigMaps) left past their deadline by crashed workers."""
    from sandq.sandbox.kubernetes import run_janitor  # noqa: PLC0415

    typer.echo(f"deleted {run_janitor(Settings())} Job(s)")


def _smaller(default: object, limit: str) -> str:
    from kubernetes.utils.quantity import parse_quantity  # noqa: PLC0415

    try:
        return limit if parse_quantity(limit) < parse_quantity(str(default)) else str(default)
    except ValueError:
        return str(default)  # the limit itself is invalid; validation names it


def _print_result(result: ExecutionResult, as_json: bool, printed: bool = False) -> None:
    if as_json:
        typer.echo(result.model_dump_json())
        return
    if not printed:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    if result.stdout_truncated or result.stderr_truncated:
        err.print("[yellow]output truncated at the limit[/yellow]")
    for f in result.output_files:
        err.print(f"[cyan]output file[/cyan] {f.name} ({len(f.content)} bytes, {f.mime_type})")
    if result.status not in (Status.SUCCEEDED, Status.FAILED) or result.error:
        err.print(f"[bold]{result.status.value}[/bold]: {result.error or ''}")


@app.command()
def batch(
    input_file: Annotated[Path, typer.Argument(help="JSONL file: one request (JSON object) per line.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="JSONL file of results, one per line.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant of every line (else each line's own).")] = None,
    priority: Annotated[str, typer.Option(help="batch, or interactive.")] = "batch",
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for all results.")] = None,
) -> None:
    """Run every line of a JSONL file; rerun the same command to resume after an interruption."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from sandq.client import batch_file  # noqa: PLC0415
    from sandq.client.client import Client  # noqa: PLC0415

    if priority not in ("batch", "interactive"):
        raise typer.BadParameter("priority must be batch or interactive")
    lines = batch_file.read_lines(input_file, tenant)
    done = batch_file.finished_ids(output)
    todo = [line for line in lines if line.id not in done]
    number = {line.id: line.number for line in lines}
    client = Client.from_env()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with output.open("a", encoding="utf-8") as out, Progress(*columns, console=err) as bar:
            task = bar.add_task("executions", total=len(lines), completed=len(lines) - len(todo))

            def write(result: ExecutionResult) -> None:
                out.write(batch_file.result_line(number[result.id], result) + "\n")
                out.flush()
                bar.advance(task)

            for line in todo:
                if line.request is None:
                    write(batch_file.invalid_line_result(line))
            valid = [line for line in todo if line.request is not None]
            finished = client.ready_results([line.id for line in valid])
            for result in finished.values():
                write(result)
            rest = [line for line in valid if line.id not in finished]
            running = client.submit_batch(
                [line.request or {} for line in rest], ids=[line.id for line in rest], priority=priority  # type: ignore[arg-type]
            )
            for result in running.as_completed(timeout=wait):
                write(result)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted; run the same command again to resume into {output}[/yellow]")
        raise typer.Exit(130) from None
    finally:
        client.close()
    counts = batch_file.sort_output(output)
    table = Table("status", "executions", title=f"{sum(counts.values())} results in {output}")
    for status, count in sorted(counts.items()):
        table.add_row(status, str(count))
    err.print(table)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show queue depth by queue and tenant, parked and in-flight executions by tenant, and workers."""
    from rich.table import Table  # noqa: PLC0415

    from sandq.client.client import Client  # noqa: PLC0415
    from sandq.client.status import snapshot  # noqa: PLC0415

    client = Client.from_env()
    try:
        state = snapshot(client)
    finally:
        client.close()
    if as_json:
        typer.echo(state.model_dump_json())
        return
    tenants = Table("tenant", "queue", "messages", "queued", "parked", "in flight", title="tenants")
    for row in state.tenants:
        tenants.add_row(
            row.tenant, row.queue, str(row.messages), str(row.queued), str(row.parked), str(row.in_flight)
        )
    console = Console()
    console.print(tenants)
    console.print(
        f"queued {state.queued} (parked {state.parked}), in flight {state.in_flight}, "
        f"reserved by workers {state.reserved_by_workers}"
    )
    workers = Table("worker", "running", title="workers")
    for name, running in sorted(state.workers.items()):
        workers.add_row(name, str(running))
    console.print(workers)


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


app.command()(serve)  # the gateway's commands (sandq.gateway.cli)
app.add_typer(keys_app, name="keys")
