"""Limits a deployment sets on top of the contract (maximum cpu, memory, timeout)."""

from __future__ import annotations

from kubernetes.utils.quantity import parse_quantity

from sandq.contract import ExecutionRequest
from sandq.settings import Settings


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
