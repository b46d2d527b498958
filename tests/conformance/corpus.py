"""Loading the bad-input corpus (cases.yaml) and checking a result against a case."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sandq.contract import Status

CASES_FILE = Path(__file__).with_name("cases.yaml")
REJECTED_GROUP = "rejected"
EXPECT_KEYS = frozenset({
    "status", "exit_code", "stdout", "stdout_contains", "stdout_excludes", "stderr", "stderr_contains",
    "stderr_excludes", "stdout_len", "stderr_len", "stdout_truncated", "stderr_truncated", "output_files",
    "output_files_count", "output_files_truncated", "error_contains",
})
NORMAL = {"code": "print('still serving')"}
"""The normal execution run after every group: the backend must still serve it."""


@dataclass(frozen=True)
class Case:
    """One corpus entry: a raw request (as a client would send it) and what must come out."""

    name: str
    group: str
    why: str
    request: dict[str, Any]
    expect: dict[str, Any]
    local_expect: dict[str, Any] | None = None
    """Where the local backend ends otherwise (its runner runs the program in its own process)."""
    warm_expect: dict[str, Any] | None = None
    """Where the Kubernetes warm path ends otherwise (its pod has no ``/sandq`` files)."""

    @property
    def status(self) -> Status:
        return Status(self.expect["status"])

    def expected(self, local: bool, warm: bool = False) -> dict[str, Any]:
        """The expectations on the local backend (``local``), on Kubernetes's warm path (``warm``)
        or on its Job path."""
        if local and self.local_expect is not None:
            return self.local_expect
        if warm and self.warm_expect is not None:
            return self.warm_expect
        return self.expect


def _input_file(spec: dict[str, Any]) -> dict[str, str]:
    if "text" in spec:
        content = str(spec["text"]).encode()
    else:
        fill = str(spec["fill"]).encode()
        content = (fill * (int(spec["size"]) // len(fill) + 1))[: int(spec["size"])]
    return {"name": spec["name"], "content": base64.b64encode(content).decode("ascii")}


def _request(raw: dict[str, Any]) -> dict[str, Any]:
    request = dict(raw)
    pad_to = request.pop("pad_code_to", None)
    if pad_to is not None:
        code = request["code"] + "#"
        request["code"] = code + "x" * (int(pad_to) - len(code.encode()))
    if "input_files" in request:
        request["input_files"] = [_input_file(f) for f in request["input_files"]]
    return request


@cache
def load_cases() -> tuple[Case, ...]:
    """Every case of cases.yaml, in file order."""
    entries = yaml.safe_load(CASES_FILE.read_text())
    cases = []
    for entry in entries:
        local, warm = entry.get("local"), entry.get("warm")
        for expect in (entry["expect"], local["expect"] if local else {}, warm["expect"] if warm else {}):
            unknown = set(expect) - EXPECT_KEYS
            if unknown:
                raise ValueError(f"case {entry['name']}: unknown expectations {sorted(unknown)}")
        why = entry["why"] + (" Locally: " + local["why"] if local else "")
        why += " Warm: " + warm["why"] if warm else ""
        cases.append(Case(entry["name"], entry["group"], " ".join(why.split()),
                          _request(entry["request"]), dict(entry["expect"]),
                          dict(local["expect"]) if local else None, dict(warm["expect"]) if warm else None))
    return tuple(cases)


def runnable_cases() -> list[Case]:
    return [c for c in load_cases() if c.group != REJECTED_GROUP]


def rejected_cases() -> list[Case]:
    return [c for c in load_cases() if c.group == REJECTED_GROUP]


def groups() -> dict[str, list[Case]]:
    """The runnable cases by group, in file order."""
    out: dict[str, list[Case]] = {}
    for case in runnable_cases():
        out.setdefault(case.group, []).append(case)
    return out


def mismatches(case: Case, result: Any, local: bool = False, warm: bool = False) -> list[str]:
    """What in ``result`` (an ExecutionResult or SandboxReport) breaks ``case``'s expectations.

    ``local``, ``warm``: the result comes from the local backend, or from Kubernetes's warm path,
    which some cases expect otherwise.
    """
    want = case.expected(local, warm)
    problems = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    status = Status(want["status"])
    check(result.status == status, f"status {result.status} != {status}")
    if "exit_code" in want:
        check(result.exit_code == want["exit_code"], f"exit_code {result.exit_code} != {want['exit_code']}")
    for stream in ("stdout", "stderr"):
        text = getattr(result, stream)
        if stream in want:
            check(text == want[stream], f"{stream} {text[:300]!r} != {want[stream]!r}")
        for part in want.get(f"{stream}_contains", []):
            check(part in text, f"{stream} lacks {part!r}: {text[-500:]!r}")
        for part in want.get(f"{stream}_excludes", []):
            check(part not in text, f"{stream} has {part!r}")
        if f"{stream}_len" in want:
            check(len(text) == want[f"{stream}_len"], f"{stream} is {len(text)} chars")
        if f"{stream}_truncated" in want:
            cut = getattr(result, f"{stream}_truncated")
            check(cut == want[f"{stream}_truncated"], f"{stream}_truncated is {cut}")
    names = sorted(f.name for f in result.output_files)
    if "output_files" in want:
        check(names == sorted(want["output_files"]), f"output files {names}")
    if "output_files_count" in want:
        check(len(names) == want["output_files_count"], f"{len(names)} output files")
    if "output_files_truncated" in want:
        cut = result.output_files_truncated
        check(cut == want["output_files_truncated"], f"output_files_truncated is {cut}")
    for part in want.get("error_contains", []):
        check(part in (result.error or ""), f"error lacks {part!r}: {result.error!r}")
    return problems
