"""What a command checks before it starts, so that a wrong setup fails at once and says why."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sandq.cli.console import err
from sandq.cli.errors import SEE_DOCTOR, CliError, ExitCode, invalid_setting
from sandq.settings import Settings

PING_SECONDS = 5.0
"""How long the first PING may take before Redis counts as unreachable."""


def redis_settings(*, ping: bool = True) -> Settings:
    """The settings, with a well-formed ``SANDQ_REDIS_URL``; with ``ping``, Redis answers there.

    One PING, not retried: an unreachable or refusing Redis fails the command at once (the
    client itself rides out a Redis restart later on).
    """
    settings = Settings()
    try:
        connection = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=PING_SECONDS,
            socket_timeout=PING_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as error:  # from_url only parses: a malformed URL
        raise invalid_setting("SANDQ_REDIS_URL", settings.redis_url, str(error)) from error
    if ping:
        with connection:
            connection.ping()
    return settings


def require_kubernetes(settings: Settings, who: str) -> None:
    """Fail unless a Kubernetes configuration loads (explicit, in-cluster or ~/.kube); ``who`` needs it."""
    from sandq.doctor import check_kubernetes  # noqa: PLC0415

    check = check_kubernetes(settings)
    if not check.ok:
        raise CliError(
            ExitCode.KUBERNETES_CONFIG,
            f"{who} needs a Kubernetes configuration: {check.detail}.",
            SEE_DOCTOR,
        )


def require_sandbox_env(settings: Settings) -> None:
    """Build the sandbox environment that local sandboxes mount, if missing; fail unless it fits the
    settings (the lock, the extra requirements, the interpreter). Never a sandbox without it."""
    from sandq.sandbox import environment  # noqa: PLC0415

    try:
        target = environment.location(settings)
        if not target.exists():
            environment.probe(settings.sandbox_python)  # a wrong interpreter fails before the note
            err.print(f"building the sandbox environment {target} (once per lock, about a minute)")
        environment.ensure(settings)
    except environment.SandboxEnvError as error:
        raise CliError(
            ExitCode.SANDBOX_ENV,
            f"the sandbox environment is unusable: {error}.",
            "Check SANDQ_SANDBOX_EXTRA_REQUIREMENTS and SANDQ_SANDBOX_PYTHON; a stale environment "
            f"is rebuilt once removed (`make sandbox-env` builds it). {SEE_DOCTOR}",
        ) from error
