"""Which exceptions are expected failures, and what each says to the user.

An exception is recognised by its type alone, never by its message:

- ``CliError``: raised by the CLI's own checks (files, the Redis URL, the Kubernetes configuration);
- pydantic's ``ValidationError`` of ``Settings`` or of the gateway's settings (not of any other
  model) and pydantic-settings' ``SettingsError``: an invalid ``SANDQ_`` variable;
- Redis and kombu connection, timeout and authentication errors, raised themselves or as the
  explicit cause (``raise ... from``) of what reached the command.

Anything else is a bug in sandq: it keeps its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import kombu.exceptions
import redis
from pydantic import ValidationError
from pydantic_settings import SettingsError
from redis.exceptions import NoPermissionError

from sandq.cli.errors import SEE_DOCTOR, CliError, ExitCode, masked, shown
from sandq.settings import Settings

SETTINGS_PREFIXES = {Settings.__name__: "SANDQ_", "GatewaySettings": "SANDQ_GATEWAY_"}
"""The settings models whose invalid values are the user's to fix, and their variables' prefix."""
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError)
_REFUSED = (redis.AuthenticationError, NoPermissionError)


def expected_failure(error: Exception) -> CliError | None:
    """The expected failure ``error`` stands for, or None if it is a bug."""
    if isinstance(error, CliError):
        return error
    if isinstance(error, ValidationError):
        prefix = SETTINGS_PREFIXES.get(error.title)
        return _invalid_settings(error, prefix) if prefix else None
    if isinstance(error, SettingsError):
        return _unparsable_setting(error)
    return _redis_failure(error)


def _invalid_settings(error: ValidationError, prefix: str) -> CliError:
    """Each invalid setting named by its variable, with the rule it breaks."""
    problems, variables = [], []
    for item in error.errors():
        field, *inner = item["loc"]
        variable = f"{prefix}{str(field).upper()}"
        where = f" ({'.'.join(map(str, inner))})" if inner else ""
        problems.append(f"{variable}{where}={shown(variable, item['input'])}: {item['msg']}")
        variables += [variable] if variable not in variables else []
    return CliError(ExitCode.SETTING, "; ".join(problems) + ".", f"Fix or unset {', '.join(variables)}.")


def _unparsable_setting(error: SettingsError) -> CliError | None:
    """A complex setting (a dict or a list) whose variable is not valid JSON."""
    field = re.search(r'field "(\w+)"', str(error))
    if field is None:
        return None
    variable = f"SANDQ_{field.group(1).upper()}"
    return CliError(
        ExitCode.SETTING, f"{variable} is not valid JSON ({error.__cause__}).", f"Fix or unset {variable}."
    )


def _redis_failure(error: Exception) -> CliError | None:
    """Redis unreachable, or refusing the credentials, at ``SANDQ_REDIS_URL``."""
    chain = list(_explicit_causes(error))
    refused = next((cause for cause in chain if isinstance(cause, _REFUSED)), None)
    if refused is not None:
        url = Settings().redis_url
        problem = f"refused the credentials ({refused})" if urlsplit(url).password else "requires a password"
        return CliError(
            ExitCode.REDIS_REFUSED,
            f"Redis at {masked(url)} {problem}.",
            f"Set the user and password: SANDQ_REDIS_URL=redis://user:password@host:port/db. {SEE_DOCTOR}",
        )
    if any(isinstance(cause, _UNREACHABLE) for cause in chain):
        return CliError(
            ExitCode.REDIS_UNREACHABLE,
            f"Redis at {masked(Settings().redis_url)} is unreachable ({str(error).rstrip('.')}).",
            f"Start redis-server, or set SANDQ_REDIS_URL to where it runs. {SEE_DOCTOR}",
        )
    return None


def _explicit_causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it was explicitly raised from, outermost first."""
    cause: BaseException | None = error
    while cause is not None:
        yield cause
        cause = cause.__cause__
