"""A batch as files: one request per JSONL line in, one result per line out, resumable.

Each line's execution id derives from the input file's hash and the line number, so that a
second run of the same file finds the results of the first (in the output file or in the
result backend) and submits only what has not finished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandq.contract import ExecutionResult


@dataclass(frozen=True)
class Line:
    """One input line: its number (from 1), its execution id, and its request or its error."""

    number: int
    id: str
    request: dict[str, Any] | None
    error: str | None = None


def read_lines(path: Path, tenant: str | None = None) -> list[Line]:
    """Parse the non-blank lines of ``path``; ``tenant`` overrides each request's tenant."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    lines = []
    for number, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        execution_id = hashlib.sha256(f"{digest}:{number}".encode()).hexdigest()[:32]
        try:
            request = json.loads(text)
            if not isinstance(request, dict):
                raise ValueError("a line must be a JSON object")
        except ValueError as error:
            lines.append(Line(number, execution_id, None, f"line {number} is not a JSON object: {error}"))
            continue
        if tenant is not None:
            request["tenant"] = tenant
        lines.append(Line(number, execution_id, request))
    return lines


def finished_ids(path: Path) -> set[str]:
    """The ids already written to the output file, which is first cleaned for appending.

    An interrupted run may have left a cut-off last line (or other unreadable lines): they
    are dropped, so that the lines appended next each start on a line of their own.
    """
    if not path.exists():
        return set()
    done = set()
    kept = []
    for text in path.read_text("utf-8").splitlines():
        try:
            row = json.loads(text)
            execution_id = str(row["id"])
            int(row["line"])
            str(row["result"]["status"])
        except (ValueError, KeyError, TypeError):
            continue
        done.add(execution_id)
        kept.append(text + "\n")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(kept), "utf-8")
    tmp.replace(path)
    return done


def invalid_line_result(line: Line) -> ExecutionResult:
    """The ``rejected`` result of a line that is not a request."""
    return ExecutionResult.rejected(line.id, line.error or "not a request")


def result_line(number: int, result: ExecutionResult) -> str:
    """One output line: the input line number, the id, and the result."""
    return json.dumps({"line": number, "id": result.id, "result": result.model_dump(mode="json")})


def sort_output(path: Path) -> dict[str, int]:
    """Rewrite the output in input order (one line per input line); count results by status."""
    rows = {}
    for text in path.read_text("utf-8").splitlines():
        try:
            row = json.loads(text)
            rows[int(row["line"])] = row
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(rows[n]) + "\n" for n in sorted(rows)), "utf-8")
    tmp.replace(path)
    counts: dict[str, int] = {}
    for row in rows.values():
        status = str(row["result"]["status"])
        counts[status] = counts.get(status, 0) + 1
    return counts
