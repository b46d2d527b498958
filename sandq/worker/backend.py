"""The one interface every sandbox backend implements, and the report it returns."""

from __future__ import annotations

import binascii
import json
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import ValidationError

from sandq.contract import ExecutionRequest, SandboxReport
from sandq.sandbox_runner import FRAME_BEGIN, FRAME_END

__all__ = ["Backend", "InfrastructureFault", "SandboxReport", "now", "parse_frame"]


class InfrastructureFault(Exception):
    """The sandbox system failed (not the user's code); the task may retry."""


class Backend(ABC):
    """Runs one request in one fresh sandbox, and cleans up after it."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, execution_id: str, request: ExecutionRequest) -> SandboxReport:
        """Run ``request`` to completion; raise ``InfrastructureFault`` on system failure."""

    def cancel(self, execution_id: str) -> bool:
        """Stop a running execution; True if one was found."""
        return False

    def sweep(self) -> None:
        """Remove sandboxes left behind by worker processes that are gone."""

    def start(self) -> None:
        """Begin background work (warm pools, watches); called once per worker process."""

    def close(self) -> None:
        """Release everything the backend holds."""


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _text(b64: str) -> str:
    return binascii.a2b_base64(b64).decode("utf-8", errors="replace")


def parse_frame(output: bytes | str) -> SandboxReport | None:
    """Read the runner's framed result document out of its output, or None."""
    text = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else output
    begin = text.rfind(FRAME_BEGIN)
    end = text.find(FRAME_END, begin + 1) if begin >= 0 else -1
    if begin < 0 or end < 0:
        return None
    try:
        doc = json.loads(text[begin + len(FRAME_BEGIN) : end])
        doc["stdout"] = _text(doc["stdout"])
        doc["stderr"] = _text(doc["stderr"])
        return SandboxReport.model_validate(doc)
    except (ValueError, KeyError, TypeError, ValidationError, binascii.Error):
        return None
