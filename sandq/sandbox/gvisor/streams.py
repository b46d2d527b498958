"""Reading a local sandbox's stdout and stderr: the program's output, capped, then the runner's report.

A local sandbox's runner runs the code in its own process (see ``sandq.sandbox.runner``),
so the program writes straight to the pipes the worker reads here, with the runner's own
loop (``runner.pump``). On stderr the runner's first byte says it is ready (the program's
time starts there); on stdout, once the program is over, the runner writes its report
behind the job's marker. The caps and the deadline are enforced while reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandq.sandbox.protocol import FRAME_END, READY, Printed, Stop
from sandq.sandbox.runner import DONE, OUTPUT_LIMIT, TIMED_OUT, Capped, Deadline, pump

BOOT_SECONDS = 30.0
"""Longest wait for a sandbox's runner to be ready."""
_END = FRAME_END.encode()


@dataclass
class Streams:
    """What a sandbox printed, its report if it came whole, and why reading stopped early."""

    printed: Printed
    report: bytes | None
    """The runner's report document, when it came complete."""
    stop: Stop | None
    """Set when the sandbox must be killed: a deadline, a cap, or a runner that never got ready."""
    started: bool
    """The runner said it was ready: what followed is the program's doing."""


class _Stdout:
    """The program's stdout up to the marker, then the report up to its end."""

    def __init__(self, marker: bytes, cap: int, report_cap: int) -> None:
        self.data = bytearray()
        self.marker, self.cap, self.report_cap = marker, cap, report_cap
        self.at = -1
        self._scanned = 0

    def __call__(self, chunk: bytes) -> str | None:
        """Take ``chunk``: ``DONE`` once the report is complete, ``OUTPUT_LIMIT`` past a cap."""
        self.data += chunk
        if self.at < 0:
            self.at = self.data.find(self.marker, self._scanned)
            self._scanned = max(len(self.data) - len(self.marker) + 1, 0)
            if self.at < 0:
                return OUTPUT_LIMIT if len(self.data) > self.cap + len(self.marker) else None
        if self.at > self.cap or len(self.data) - self.at > len(self.marker) + self.report_cap:
            return OUTPUT_LIMIT
        complete = len(self.data) >= self.at + len(self.marker) + len(_END) and self.data.endswith(_END)
        return DONE if complete else None

    def program_output(self) -> tuple[bytes, bool]:
        """The program's own stdout, cut at the cap, and whether it was cut."""
        output = self.data[: self.at] if self.at >= 0 else self.data
        return bytes(output[: self.cap]), len(output) > self.cap

    def report(self) -> bytes | None:
        """The report document between the marker and its end, if it came whole."""
        if self.at < 0 or not self.data.endswith(_END):
            return None
        return bytes(self.data[self.at + len(self.marker) : -len(_END)])


class _Stderr(Capped):
    """The program's stderr, capped; the runner's readiness byte comes first and starts the clock."""

    def __init__(self, cap: int, started: bool, deadline: Deadline, timeout: float) -> None:
        super().__init__(cap)
        self.started, self.deadline, self.timeout = started, deadline, timeout

    def __call__(self, chunk: bytes) -> str | None:
        if not self.started and chunk[:1] == READY:
            self.started = True
            self.deadline.move(self.timeout)
            chunk = chunk[1:]
        return super().__call__(chunk)


def read_streams(
    out_fd: int,
    err_fd: int,
    *,
    marker: bytes,
    cap: int,
    report_cap: int,
    timeout: float,
    started: bool,
    exited: Callable[[], bool],
) -> Streams:
    """Read a sandbox's two pipes until its report is complete, both reach EOF, or a limit stops it.

    ``cap`` applies to each of the program's streams, ``report_cap`` to the report; the
    ``timeout`` runs from now if the runner is ``started`` (ready), else from its readiness
    byte, which must come within ``BOOT_SECONDS``.
    """
    deadline = Deadline(timeout if started else BOOT_SECONDS)
    stdout = _Stdout(marker, cap, report_cap)
    stderr = _Stderr(cap, started, deadline, timeout)
    why = pump({out_fd: stdout, err_fd: stderr}, deadline, exited)
    stop = None
    if why == TIMED_OUT:
        stop = Stop.TIMED_OUT if stderr.started else Stop.NOT_STARTED
    elif why == OUTPUT_LIMIT:
        stop = Stop.OUTPUT_LIMIT
    out, out_cut = stdout.program_output()
    printed = Printed(out, bytes(stderr.data), out_cut, stderr.truncated)
    return Streams(printed, stdout.report() if why == DONE else None, stop, stderr.started)
