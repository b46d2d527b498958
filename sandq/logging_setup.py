"""Worker logs: one JSON object (or text line) per record, carrying the execution id.

Every record emitted while a task runs carries that execution's id (set at Celery's
``task_prerun``, cleared at ``task_postrun``; see ``sandq.worker.process``). Celery's
"Task ... succeeded" line would print the task's return value, which holds the user's stdout:
it is cut down to the status.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

from celery.signals import setup_logging

LogFormat = Literal["json", "text"]

NO_EXECUTION = "-"
"""The ``execution_id`` of records emitted outside any execution."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s [%(execution_id)s] %(message)s"

_execution_id: ContextVar[str | None] = ContextVar("sandq_execution_id", default=None)
_STATUS = re.compile(r"'status': '([a-z_]+)'")


def enter_execution(execution_id: str | None) -> None:
    """Tag the records that follow, in this context, with ``execution_id``."""
    _execution_id.set(execution_id)


def leave_execution() -> None:
    """Stop tagging records with an execution id."""
    _execution_id.set(None)


class ExecutionContext(logging.Filter):
    """Sets ``record.execution_id`` and keeps task return values (user output) out of messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate and redact ``record``; never drop it."""
        args = record.args if isinstance(record.args, Mapping) else None
        execution_id = _execution_id.get()
        if execution_id is None and args is not None and record.name.startswith("celery"):
            task_id = args.get("id")  # Celery's received/succeeded/retry lines name the task
            execution_id = str(task_id) if task_id else None
        record.execution_id = execution_id or NO_EXECUTION
        if args is not None and "return_value" in args:
            status = _STATUS.search(str(args["return_value"]))
            summary = f"status={status.group(1)}" if status else "(result not logged)"
            record.args = {**args, "return_value": summary}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, execution_id, message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        execution_id = getattr(record, "execution_id", NO_EXECUTION)
        if execution_id != NO_EXECUTION:
            doc["execution_id"] = execution_id
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str)


def configure_logging(log_format: LogFormat, level: str | int) -> None:
    """Send every record to stderr in ``log_format``, with execution ids and results redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ExecutionContext())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)


def use_for_celery_worker(log_format: LogFormat, level: str) -> None:
    """Configure logging now, and have the Celery worker keep it rather than set up its own."""
    configure_logging(log_format, level.upper())
    setup_logging.connect(_keep_configured)


def _keep_configured(**_: object) -> None:
    """Any receiver of ``setup_logging`` tells Celery that logging is configured already."""
