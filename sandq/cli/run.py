"""``sandq run``: one program through the queue; its output, and an exit code that says how it ended."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandq.cli.console import err
from sandq.cli.files import reading
from sandq.cli.preflight import redis_settings
from sandq.contract import DEFAULT_TENANT, ExecutionRequest, ExecutionResult, Status
from sandq.settings import Settings

if TYPE_CHECKING:
    from sandq.broker.output import OutputChunk

EXIT_CODES = {
    Status.TIMED_OUT: 124,
    Status.OOM_KILLED: 137,
    Status.OUTPUT_LIMIT_EXCEEDED: 125,
    Status.REJECTED: 65,
    Status.INFRASTRUCTURE_ERROR: 70,
    Status.CANCELLED: 130,
}
"""Process exit code of ``sandq run`` for each status that is not the program's own."""

NO_RESULT_EXIT_CODE = 70
"""``sandq run``'s exit code when no result arrived within the wait."""

EPILOG = "\n".join(
    [
        "Exit code: the program's own when it succeeded or failed; otherwise",
        *(f"{code:>3}  {status.value}" for status, code in EXIT_CODES.items()),
        f"{NO_RESULT_EXIT_CODE:>3}  no result within --wait (is a worker running?)",
        "`sandq --help` lists the exit codes of setup failures.",
    ]
)


def exit_code_for(result: ExecutionResult) -> int:
    """``sandq run``'s exit code: the program's own, or one that names the status."""
    if result.status in (Status.SUCCEEDED, Status.FAILED):
        return result.exit_code if result.exit_code is not None else 1
    return EXIT_CODES[result.status]


def run(
    file: Annotated[str, typer.Argument(help="Python file to run, or - for standard input.")] = "-",
    timeout: Annotated[int, typer.Option(help="Seconds before the sandbox is killed.")] = 300,
    mem_limit: Annotated[str, typer.Option(help="Memory limit, e.g. 512Mi.")] = "512Mi",
    cpu_limit: Annotated[str, typer.Option(help="CPU limit, e.g. 500m.")] = "500m",
    tenant: Annotated[str, typer.Option(help="Tenant the execution is billed to.")] = DEFAULT_TENANT,
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--input", help="A file the program finds in its working directory, by its name (repeatable)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for the result.")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend for --dry-run: kubernetes.")] = None,
    placement: Annotated[
        str | None,
        typer.Option(help="Kubernetes: job, or warm (a pre-started sandbox); default: the workers'."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the manifests it would create; contact nothing.")
    ] = False,
    stream: Annotated[
        bool, typer.Option(help="Print the output as the code writes it (not with --json).")
    ] = True,
) -> None:
    """Run code through the queue and print its result; exit with the program's code."""
    from sandq.client.client import Client, ResultTimeout  # noqa: PLC0415

    with reading(file):
        code = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    raw: dict[str, Any] = {
        "code": code,
        "timeout_seconds": timeout,
        "mem_limit": mem_limit,
        "cpu_limit": cpu_limit,
        "tenant": tenant,
        "input_files": [_input_file(path) for path in inputs or []],
    }
    if placement is not None:
        raw["placement"] = placement
    for field, limit in (("mem_requested", mem_limit), ("cpu_requested", cpu_limit)):
        default = ExecutionRequest.model_fields[field].default
        raw[field] = _smaller(default, limit)
    if dry_run:
        _dry_run(raw, backend)
        return
    client = Client(redis_settings())
    live = stream and not as_json
    seconds = wait if wait is not None else timeout + 120
    try:
        result = client.run(raw, seconds, on_output=_print_chunk) if live else client.run(raw, seconds)
    except ResultTimeout as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(NO_RESULT_EXIT_CODE) from None
    finally:
        client.close()
    _print_result(result, as_json, printed=live)
    raise typer.Exit(exit_code_for(result))


def _print_chunk(chunk: OutputChunk) -> None:
    out = sys.stdout if chunk.stream == "stdout" else sys.stderr
    out.write(chunk.data)
    out.flush()


def _dry_run(raw: dict[str, Any], backend: str | None) -> None:
    """Print what a kubernetes run would create (a Job and its ConfigMap, or a SandboxClaim), as YAML."""
    import uuid  # noqa: PLC0415

    from sandq.sandbox.kubernetes import dry_run_yaml  # noqa: PLC0415
    from sandq.validation import RequestRejected, validate_request  # noqa: PLC0415

    settings = Settings()
    if (backend or settings.backend) != "kubernetes":
        err.print("[red]--dry-run needs --backend kubernetes[/red]")
        raise typer.Exit(2)
    try:
        request = validate_request(raw, settings)
    except RequestRejected as error:
        err.print(f"[bold]{Status.REJECTED.value}[/bold]: {error}", soft_wrap=True)
        raise typer.Exit(EXIT_CODES[Status.REJECTED]) from None
    typer.echo(dry_run_yaml(request, settings, uuid.uuid4().hex), nl=False)


def _input_file(path: Path) -> dict[str, str]:
    with reading(path):
        content = path.read_bytes()
    return {"name": path.name, "content": base64.b64encode(content).decode("ascii")}


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
    if not printed:  # streamed as it came
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    if result.stdout_truncated or result.stderr_truncated:
        err.print("[yellow]output truncated at the limit[/yellow]")
    for f in result.output_files:
        err.print(f"[cyan]output file[/cyan] {f.name} ({len(f.content)} bytes, {f.mime_type})")
    if result.status not in (Status.SUCCEEDED, Status.FAILED) or result.error:
        err.print(f"[bold]{result.status.value}[/bold]: {result.error or ''}")
