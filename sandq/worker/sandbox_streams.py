"""Reading a local sandbox's stdout and stderr: the program's output, capped, then the runner's report.

A local sandbox's runner runs the code in its own process (see ``sandbox_runner``), so
the program writes straight to the pipes the worker reads here. On stderr the runner's
first byte says it is ready (the program's time starts there); on stdout, once the
program is over, the runner writes its report behind the job's marker. The caps and the
deadline are enforced while reading.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

from sandq.sandbox_runner import FRAME_END, READY

TIMED_OUT = "timed_out"
OUTPUT_LIMIT = "output_limit_exceeded"
NOT_STARTED = "not_started"
BOOT_SECONDS = 30.0
"""Longest wait for a sandbox's runner to be ready."""
EXIT_POLL_SECONDS = 0.1
"""How often a silent reader checks whether the sandbox has exited."""
_END = FRAME_END.encode()


@dataclass
class Streams:
    """What a sandbox printed, and why reading stopped early (``stop``), if it did."""

    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    report: bytes | None = None
    """The runner's report document, when it came complete."""
    stop: str | None = None
    """``TIMED_OUT``, ``OUTPUT_LIMIT`` or ``NOT_STARTED``: the sandbox must be killed."""
    started: bool = False
    """The runner said it was ready: what followed is the program's doing."""


class _Stdout:
    """The program's stdout up to the marker, then the report up to its end."""

    def __init__(self, marker: bytes, cap: int, report_cap: int) -> None:
        self.data = bytearray()
        self.marker, self.cap, self.report_cap = marker, cap, report_cap
        self.at = -1
        self._scanned = 0

    def feed(self, chunk: bytes) -> bool:
        """Take ``chunk``; True once the report is complete. Raises ``OverflowError`` past a cap."""
        self.data += chunk
        if self.at < 0:
            self.at = self.data.find(self.marker, self._scanned)
            self._scanned = max(len(self.data) - len(self.marker) + 1, 0)
            if self.at < 0:
                if len(self.data) > self.cap + len(self.marker):
                    raise OverflowError
                return False
        if self.at > self.cap or len(self.data) - self.at > len(self.marker) + self.report_cap:
            raise OverflowError
        return len(self.data) >= self.at + len(self.marker) + len(_END) and self.data.endswith(_END)

    def program_output(self) -> tuple[bytes, bool]:
        """The program's own stdout, cut at the cap, and whether it was cut."""
        output = self.data[: self.at] if self.at >= 0 else self.data
        return bytes(output[: self.cap]), len(output) > self.cap


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
    result = Streams(started=started)
    stdout = _Stdout(marker, cap, report_cap)
    stderr = bytearray()
    deadline = time.monotonic() + (timeout if started else BOOT_SECONDS)
    poller = select.poll()
    open_fds = {out_fd, err_fd}
    for fd in open_fds:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    while open_fds and result.stop is None and result.report is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            result.stop = TIMED_OUT if result.started else NOT_STARTED
            break
        events = poller.poll(min(remaining, EXIT_POLL_SECONDS) * 1000)
        if not events and exited():  # gone, though something still holds a pipe open
            break
        for fd, _ in events:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
            elif fd == err_fd:
                if not result.started and chunk[:1] == READY:
                    result.started = True
                    deadline = time.monotonic() + timeout
                    chunk = chunk[1:]
                stderr += chunk
                if len(stderr) > cap:
                    result.stop = OUTPUT_LIMIT
            else:
                try:
                    if stdout.feed(chunk):
                        result.report = bytes(stdout.data[stdout.at + len(marker) : -len(_END)])
                except OverflowError:
                    result.stop = OUTPUT_LIMIT
    result.stdout, result.stdout_truncated = stdout.program_output()
    result.stderr, result.stderr_truncated = bytes(stderr[:cap]), len(stderr) > cap
    return result
