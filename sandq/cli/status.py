"""``sandq status`` and ``sandq doctor``: what the queue holds, and what the setup lacks."""

from __future__ import annotations

from typing import Annotated

import typer

from sandq.cli.console import err, out
from sandq.cli.preflight import redis_settings
from sandq.settings import Settings


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show queue depth by queue and tenant, parked and in-flight executions by tenant, and workers."""
    from rich.table import Table  # noqa: PLC0415

    from sandq.client.client import Client  # noqa: PLC0415
    from sandq.client.status import snapshot  # noqa: PLC0415

    client = Client(redis_settings())
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
    out.print(tenants)
    out.print(
        f"queued {state.queued} (parked {state.parked}), in flight {state.in_flight}, "
        f"reserved by workers {state.reserved_by_workers}"
    )
    workers = Table("worker", "running", title="workers")
    for name, running in sorted(state.workers.items()):
        workers.add_row(name, str(running))
    out.print(workers)


def doctor() -> None:
    """Check Redis, runsc, the sandbox environment and the Kubernetes configuration; say how to fix each."""
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
