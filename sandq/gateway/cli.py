"""The gateway's commands: ``sandq serve`` and ``sandq keys create|list|revoke``.

Registered on the ``sandq`` command (``sandq.cli``). What they need of the ``gateway`` extra
(FastAPI, uvicorn, limits) is imported when they run, so the rest of the command line works
without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sandq.gateway.credentials import ApiKeys
    from sandq.gateway.settings import GatewaySettings

T = TypeVar("T")
err = Console(stderr=True, soft_wrap=True)
keys_app = typer.Typer(help="Create, list and revoke the gateway's API keys.", no_args_is_help=True)


def _gateway_settings() -> GatewaySettings:
    """The ``SANDQ_GATEWAY_`` settings (an invalid one is the command line's clean error, exit 78);
    a missing extra is one line and exit 2."""
    try:
        from sandq.gateway.settings import GatewaySettings  # noqa: PLC0415
    except ImportError as missing:
        err.print(f"[red]the gateway needs its extra: pip install 'sandq\\[gateway]' ({missing.name})[/red]")
        raise typer.Exit(2) from None
    return GatewaySettings()


def _with_keys(action: Callable[[ApiKeys], Awaitable[T]]) -> T:
    """Run ``action`` on the deployment's API keys (``SANDQ_REDIS_URL``, ``SANDQ_QUEUE``)."""
    import redis.asyncio as aioredis  # noqa: PLC0415

    from sandq.gateway.credentials import ApiKeys  # noqa: PLC0415
    from sandq.settings import Settings  # noqa: PLC0415

    config = _gateway_settings()
    settings = Settings()

    async def run() -> T:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            return await action(ApiKeys(client, config, settings.queue))
        finally:
            await client.aclose()

    return asyncio.run(run())


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for (a slug).")],
) -> None:
    """Make an API key for TENANT: shown once, as the last line of standard output."""
    try:
        made = _with_keys(lambda keys: keys.create(tenant))
    except ValueError as invalid:
        err.print(f"[red]{invalid}[/red]")
        raise typer.Exit(2) from None
    err.print(f"key {made.record.key_id} for tenant {made.record.tenant}; it is shown once, keep it secret")
    typer.echo(made.token)


@keys_app.command("list")
def list_keys() -> None:
    """Every key's id, tenant, creation and revocation (never the key)."""
    from rich.table import Table  # noqa: PLC0415

    table = Table("key id", "tenant", "created", "revoked")
    for key in _with_keys(lambda keys: keys.list_all()):
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else ""
        table.add_row(key.key_id, key.tenant, key.created_at.isoformat(timespec="seconds"), revoked)
    Console().print(table)


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key id `sandq keys list` shows.")]) -> None:
    """Revoke a key at once: its next request gets 401."""
    if not _with_keys(lambda keys: keys.revoke(key_id)):
        err.print(f"[red]no key {key_id}[/red]")
        raise typer.Exit(1)
    err.print(f"revoked {key_id}")


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the multi-tenant HTTP gateway (API keys, live output, webhooks); see docs/gateway.md."""
    _gateway_settings()
    import uvicorn  # noqa: PLC0415

    uvicorn.run(
        "sandq.gateway.app:create_app", factory=True, host=host, port=port, log_level=log_level,
        proxy_headers=False, server_header=False,
    )
