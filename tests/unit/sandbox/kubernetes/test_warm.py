"""The warm path's reading of a SandboxClaim's status (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from sandq.sandbox.kubernetes.warm import claim_binding


def _claim(ready: str | None, reason: str = "", sandbox: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": reason, "message": "m"}]
    if sandbox is not None:
        status["sandbox"] = {"name": sandbox}
    return {"metadata": {"name": "sq-1"}, "status": status}


@pytest.mark.parametrize(
    ("claim", "binding"),
    [
        (_claim(None), (None, None)),
        (_claim("False", "SandboxNotReady", "pool-1"), (None, None)),  # adopted, its pod not ready yet
        (_claim("True", "DependenciesReady"), (None, None)),  # no sandbox named yet
        (_claim("True", "DependenciesReady", "pool-1"), ("pool-1", None)),
        (_claim("False", "TemplateNotFound"), (None, "TemplateNotFound: m")),
        (_claim("False", "InvalidMetadata"), (None, "InvalidMetadata: m")),
        (_claim("False", "ReconcilerError"), (None, None)),  # may pass: waited for, within the timeout
    ],
)
def test_claim_binding(claim: dict[str, Any], binding: tuple[str | None, str | None]) -> None:
    assert claim_binding(claim) == binding
