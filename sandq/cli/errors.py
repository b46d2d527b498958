"""Expected failures at the command line: the problem and the fix on stderr, and a distinct exit code.

An expected failure is one the user can fix (a file, Redis, a ``SANDQ_`` setting, the Kubernetes
configuration); ``sandq.cli.failures`` says which exceptions are ones. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum

from kombu.utils.url import maybe_sanitize_url
from rich.console import Console
from rich.markup import escape


class ExitCode(IntEnum):
    """Exit codes of the expected failures (from sysexits.h)."""

    INPUT_FILE = 66  # EX_NOINPUT
    REDIS_UNREACHABLE = 69  # EX_UNAVAILABLE
    SANDBOX_ENV = 71  # EX_OSERR
    KUBERNETES_CONFIG = 72  # EX_OSFILE
    OUTPUT_FILE = 73  # EX_CANTCREAT
    REDIS_REFUSED = 77  # EX_NOPERM
    SETTING = 78  # EX_CONFIG


EXIT_CODES: dict[int, str] = {
    0: "success (sandq run: the program's own exit code)",
    1: "doctor: a check failed; healthcheck: no worker answered; a bug (with a traceback)",
    2: "bad command line",
    ExitCode.INPUT_FILE: "an input file is missing or unreadable",
    ExitCode.REDIS_UNREACHABLE: "Redis is unreachable",
    ExitCode.SANDBOX_ENV: "the sandbox environment cannot be built or does not fit (SANDQ_BACKEND=gvisor)",
    ExitCode.KUBERNETES_CONFIG: "no Kubernetes configuration (SANDQ_BACKEND=kubernetes, janitor)",
    ExitCode.OUTPUT_FILE: "an output file cannot be written",
    ExitCode.REDIS_REFUSED: "Redis refused the user or password",
    ExitCode.SETTING: "a SANDQ_ setting is invalid (the variable and the rule are named)",
}
"""Every exit code of ``sandq`` except ``sandq run``'s status codes, for ``--help``."""

SEE_DOCTOR = "`sandq doctor` checks the whole setup."

stderr = Console(stderr=True, soft_wrap=True, highlight=False)
"""Where failures are printed: never wrapped, so that a message stays on its line."""


class CliError(Exception):
    """An expected failure: what is wrong, how to fix it, and the exit code."""

    def __init__(self, code: ExitCode, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.code = code
        self.problem = " ".join(problem.split())  # one line each, whatever a wrapped error said
        self.fix = " ".join(fix.split())

    def show(self) -> None:
        """Print the problem and the fix: two lines on stderr."""
        stderr.print(f"[bold red]sandq:[/bold red] {escape(self.problem)}")
        stderr.print(escape(self.fix))


def invalid_setting(variable: str, value: object, rule: str) -> CliError:
    """A ``SANDQ_`` variable whose value breaks ``rule``."""
    problem = f"{variable}={shown(variable, value)}: {rule}."
    return CliError(ExitCode.SETTING, problem, f"Fix or unset {variable}.")


def shown(variable: str, value: object) -> str:
    """A setting's value as the user wrote it, shortened, and without a password."""
    text = masked(str(value)) if variable == "SANDQ_REDIS_URL" else str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def masked(url: str) -> str:
    """``url`` with its password masked."""
    return str(maybe_sanitize_url(url))
