"""Reading a local sandbox's stdout and stderr: the program's output, capped, then the runner's report.

A local sandbox's runner runs the code in its own process (see ``sandq.sandbox.runner``),
so the program writes straight to the pipes the worker reads here, with the runner's own
loop (``runner.pump``). On stderr the runner's first byte says it is ready (the program's
time starts there); on stdout, once the program is over, the runner writes its report
behind the job's marker. The caps and the deadline are enforced while reading.

An ``on_output`` callback sees the program's output as it is read: stderr after the readiness
byte, stdout up to the marker. The tail of stdout that could be the start of the marker is held
back until the next bytes show it is not (the marker starts with a NUL byte, so text output is
never held back).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sandq.sandbox.backend import OnOutput
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


def _marker_start(data: bytearray, marker: bytes) -> int:
    """How many bytes at the end of ``data`` could be the start of ``marker``."""
    at = data.find(marker[:1], max(len(data) - len(marker) + 1, 0))
    while at >= 0:
        if marker.startswith(data[at:]):
            return len(data) - at
        at = data.find(marker[:1], at + 1)
    return 0


class _Stdout:
    """The program's stdout up to the marker, then the report up to its end.

    Its output goes to ``on_output`` once the runner is ready (``live``): stdout read in the
    same poll as the readiness byte, and handled first, waits until then.
    """

    def __init__(
        self, marker: bytes, cap: int, report_cap: int, on_output: OnOutput | None, live: bool
    ) -> None:
        self.data = bytearray()
        self.marker, self.cap, self.report_cap = marker, cap, report_cap
        self.on_output, self.live = on_output, live
        self.at = -1
        self._scanned = 0
        self._published = 0

    def __call__(self, chunk: bytes) -> str | None:
        """Take ``chunk``: ``DONE`` once the report is complete, ``OUTPUT_LIMIT`` past a cap."""
        self.data += chunk
        if self.at < 0:
            self.at = self.data.find(self.marker, self._scanned)
            self._scanned = max(len(self.data) - len(self.marker) + 1, 0)
            self.publish()
            if self.at < 0:
                return OUTPUT_LIMIT if len(self.data) > self.cap + len(self.marker) else None
        if self.at > self.cap or len(self.data) - self.at > len(self.marker) + self.report_cap:
            return OUTPUT_LIMIT
        complete = len(self.data) >= self.at + len(self.marker) + len(_END) and self.data.endswith(_END)
        return DONE if complete else None

    def publish(self, ended: bool = False) -> None:
        """Hand the program's output not yet handed to ``on_output``: up to the marker, or up to a
        tail that could be its start (all of it once the program has ``ended`` without a report)."""
        if self.on_output is None or not self.live:
            return
        if self.at >= 0:
            end = self.at
        else:
            end = len(self.data) - (0 if ended else _marker_start(self.data, self.marker))
        if end > self._published:
            self.on_output("stdout", bytes(self.data[self._published : end]))
            self._published = end

    def go_live(self) -> None:
        """The runner is ready: hand over what came before."""
        self.live = True
        self.publish()

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
    """The program's stderr, capped; the runner's readiness byte comes first and starts the clock.

    What comes before the readiness byte is runsc's own, never handed to ``on_output``.
    """

    def __init__(
        self, cap: int, deadline: Deadline, timeout: float, stdout: _Stdout, on_started: Callable[[], None]
    ) -> None:
        super().__init__(cap)
        self.deadline, self.timeout, self.stdout = deadline, timeout, stdout
        self.on_started = on_started

    @property
    def started(self) -> bool:
        """The runner said it was ready."""
        return self.stdout.live

    def __call__(self, chunk: bytes) -> str | None:
        if not self.started and chunk[:1] == READY:
            self.deadline.move(self.timeout)
            self.stdout.go_live()
            self.on_started()
            chunk = chunk[1:]
        if chunk and self.started and self.stdout.on_output is not None:
            self.stdout.on_output("stderr", chunk)
        return super().__call__(chunk)


def _drain(fd: int, reader: Callable[[bytes], str | None]) -> None:
    """Feed ``reader`` what ``fd`` (non-blocking) holds now, until it is empty or the reader stops."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk or reader(chunk) is not None:
            return


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
    on_output: OnOutput | None = None,
    on_started: Callable[[], None] = lambda: None,
) -> Streams:
    """Read a sandbox's two pipes until its report is complete, both reach EOF, or a limit stops it.

    ``cap`` applies to each of the program's streams, ``report_cap`` to the report; the
    ``timeout`` runs from now if the runner is ``started`` (ready), else from its readiness
    byte, which must come within ``BOOT_SECONDS`` (``on_started()`` is called when it comes).
    ``on_output(stream, data)`` sees the program's output as it is read.
    """
    deadline = Deadline(timeout if started else BOOT_SECONDS)
    stdout = _Stdout(marker, cap, report_cap, on_output, live=started)
    stderr = _Stderr(cap, deadline, timeout, stdout, on_started)
    why = pump({out_fd: stdout, err_fd: stderr}, deadline, exited)
    if why == DONE:  # the program's stderr came before the report, perhaps in the same poll: read it
        _drain(err_fd, stderr)
    stdout.publish(ended=True)
    stop = None
    if why == TIMED_OUT:
        stop = Stop.TIMED_OUT if stderr.started else Stop.NOT_STARTED
    elif why == OUTPUT_LIMIT:
        stop = Stop.OUTPUT_LIMIT
    out, out_cut = stdout.program_output()
    printed = Printed(out, bytes(stderr.data), out_cut, stderr.truncated)
    return Streams(printed, stdout.report() if why == DONE else None, stop, stderr.started)
