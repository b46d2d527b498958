"""Turn a raw request into a valid one, or into the sentence that rejects it.

The contract's own checks come first, then this deployment's maximums (cpu, memory, timeout).
"""

from __future__ import annotations

from collections.abc import Mapping

from kubernetes.utils.quantity import parse_quantity
from pydantic import ValidationError

from sandq.contract import ExecutionRequest
from sandq.settings import Settings


class RequestRejected(ValueError):
    """An invalid request; the message names the field at fault."""


def describe(error: ValidationError) -> str:
    """One line per problem, each starting with the field's dotted path."""
    parts = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        field = ".".join(str(p) for p in item["loc"])
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts)


def limit_violation(request: ExecutionRequest, settings: Settings) -> str | None:
    """A sentence naming the field that exceeds this deployment's maximum, or None."""
    if request.timeout_seconds > settings.max_timeout_seconds:
        return (
            f"timeout_seconds: {request.timeout_seconds} exceeds the maximum {settings.max_timeout_seconds}"
        )
    if parse_quantity(request.cpu_limit) > parse_quantity(settings.max_cpu_limit):
        return f"cpu_limit: {request.cpu_limit} exceeds the maximum {settings.max_cpu_limit}"
    if parse_quantity(request.mem_limit) > parse_quantity(settings.max_mem_limit):
        return f"mem_limit: {request.mem_limit} exceeds the maximum {settings.max_mem_limit}"
    return None


def validate_request(raw: ExecutionRequest | Mapping[str, object], settings: Settings) -> ExecutionRequest:
    """The request, checked against the contract and this deployment's maximums."""
    if isinstance(raw, ExecutionRequest):
        request = raw
    else:
        try:
            request = ExecutionRequest.model_validate(dict(raw))
        except ValidationError as error:
            raise RequestRejected(describe(error)) from None
    violation = limit_violation(request, settings)
    if violation:
        raise RequestRejected(violation)
    return request
