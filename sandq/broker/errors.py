"""Typed refusals of a submission: nothing was enqueued, try again after ``retry_after``."""

from __future__ import annotations


class SubmissionRefused(Exception):
    """Admission refused the submission; nothing was enqueued."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(f"{message}; retry after {retry_after:g} s")
        self.retry_after = retry_after


class QueueFull(SubmissionRefused):
    """The global cap on queued executions is reached."""


class TenantQuotaExceeded(SubmissionRefused):
    """The tenant's cap on queued executions is reached."""

    def __init__(self, tenant: str, retry_after: float) -> None:
        super().__init__(f"tenant {tenant!r} has reached its cap on queued executions", retry_after)
        self.tenant = tenant
