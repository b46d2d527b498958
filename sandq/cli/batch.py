"""``sandq batch``: every line of a JSONL file through the queue, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from sandq.cli.console import err
from sandq.cli.files import reading, writing
from sandq.cli.preflight import redis_settings
from sandq.contract import ExecutionResult

if TYPE_CHECKING:
    from sandq.client.batch_file import Line
    from sandq.client.client import Client


def batch(
    input_file: Annotated[Path, typer.Argument(help="JSONL file: one request (JSON object) per line.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="JSONL file of results, one per line.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant of every line (else each line's own).")] = None,
    priority: Annotated[str, typer.Option(help="batch, or interactive.")] = "batch",
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for all results.")] = None,
) -> None:
    """Run every line of a JSONL file; rerun the same command to resume after an interruption."""
    from rich.table import Table  # noqa: PLC0415

    from sandq.client import batch_file  # noqa: PLC0415
    from sandq.client.client import Client  # noqa: PLC0415

    if priority not in ("batch", "interactive"):
        raise typer.BadParameter("priority must be batch or interactive")
    with reading(input_file):
        lines = batch_file.read_lines(input_file, tenant)
    with writing(output):
        done = batch_file.finished_ids(output)
        out = output.open("a", encoding="utf-8")
    with out:
        client = Client(redis_settings())
        try:
            _run(client, out, lines, [line for line in lines if line.id not in done], priority, wait)
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


def _run(
    client: Client, out: TextIO, lines: list[Line], todo: list[Line], priority: str, wait: float | None
) -> None:
    """Write a result line to ``out`` for each line to do, in the order they finish, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from sandq.client import batch_file  # noqa: PLC0415

    number = {line.id: line.number for line in lines}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as bar:
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
            [line.request or {} for line in rest],
            ids=[line.id for line in rest],
            priority=priority,  # type: ignore[arg-type]
        )
        for result in running.as_completed(timeout=wait):
            write(result)
