"""The files a command reads and writes: a failure names the file and exits 66 or 73."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sandq.cli.errors import CliError, ExitCode


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Turn a failure to read ``path`` (``-``: standard input) inside the block into an expected one."""
    try:
        yield
    except (OSError, UnicodeDecodeError) as error:
        name = "standard input" if str(path) == "-" else str(path)
        raise CliError(
            ExitCode.INPUT_FILE,
            f"cannot read {name}: {_reason(error)}.",
            "Check the path, and that the file is readable UTF-8 text.",
        ) from error


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failure to open or prepare ``path`` for writing inside the block into an expected one."""
    try:
        yield
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(
            ExitCode.OUTPUT_FILE,
            f"cannot write {path}: {_reason(error)}.",
            "Check that its directory exists and is writable, or choose another path.",
        ) from error


def _reason(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start}: {error.reason})"
    return (error.strerror or str(error)).lower()
