"""Turn a raw request into a valid one, or into the sentence that rejects it."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from sandq.contract import ExecutionRequest
from sandq.limits import limit_violation
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
