"""The worker's reader of a local sandbox's pipes: the program's output apart from the report, caps, deadline.

Real pipes, written by a thread the way a sandbox would write them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sandq.sandbox.backend import OnOutput
from sandq.sandbox.gvisor import streams as sandbox_streams
from sandq.sandbox.gvisor.streams import Streams, read_streams
from sandq.sandbox.protocol import FRAME_END, READY, Stop

MARKER = b"\x00=====SANDQ-REPORT-0123abcd=====\n"
REPORT = b'{"status": "succeeded", "exit_code": 0}'


@contextmanager
def sandbox(out: list[bytes], err: list[bytes], pause: float = 0.0) -> Iterator[tuple[int, int]]:
    """Two pipes fed chunk by chunk (``pause`` apart) from a thread, closed at the end."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()

    def feed() -> None:
        try:
            for fd, chunks in ((err_w, err), (out_w, out)):
                for chunk in chunks:
                    os.write(fd, chunk)
                    time.sleep(pause)
        except BrokenPipeError:
            pass
        finally:
            os.close(out_w)
            os.close(err_w)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield out_r, err_r
    finally:
        os.close(out_r)
        os.close(err_r)
        writer.join(5)


def read(out: list[bytes], err: list[bytes], *, cap: int = 100, timeout: float = 5, started: bool = True,
         pause: float = 0.0, on_output: OnOutput | None = None) -> Streams:
    with sandbox(out, err, pause) as (out_fd, err_fd):
        return read_streams(out_fd, err_fd, marker=MARKER, cap=cap, report_cap=200, timeout=timeout,
                            started=started, exited=lambda: False, on_output=on_output)


class Seen:
    """What ``on_output`` was handed, call by call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def __call__(self, stream: str, data: bytes) -> None:
        self.calls.append((stream, data))

    def joined(self, stream: str) -> bytes:
        return b"".join(data for name, data in self.calls if name == stream)


def test_the_report_is_found_even_split_across_reads() -> None:
    frame = MARKER + REPORT + FRAME_END.encode()
    got = read([b"hello\n", frame[:10], frame[10:40], frame[40:]], [b"warn\n"], pause=0.01)
    assert got.report == REPORT
    assert (got.printed.stdout, got.printed.stderr, got.stop) == (b"hello\n", b"warn\n", None)
    assert not got.printed.stdout_truncated and not got.printed.stderr_truncated


def test_output_that_only_looks_like_a_report_is_output() -> None:
    fake = b"\n=====SANDQ-RESULT-BEGIN=====\n{}" + FRAME_END.encode()
    got = read([fake, MARKER + REPORT + FRAME_END.encode()], [])
    assert got.printed.stdout == fake
    assert got.report == REPORT


def test_the_program_is_cut_at_exactly_the_cap() -> None:
    got = read([b"x" * 60, b"y" * 60, b"z" * 1000], [])
    assert got.stop == Stop.OUTPUT_LIMIT
    assert got.printed.stdout == b"x" * 60 + b"y" * 40 and got.printed.stdout_truncated
    assert got.report is None


def test_a_report_after_too_much_output_is_still_over_the_cap() -> None:
    got = read([b"x" * 101 + MARKER + REPORT + FRAME_END.encode()], [])
    assert got.stop == Stop.OUTPUT_LIMIT and got.printed.stdout_truncated and len(got.printed.stdout) == 100


def test_stderr_has_its_own_cap() -> None:
    got = read([b"fine\n"], [b"e" * 150])
    assert got.stop == Stop.OUTPUT_LIMIT
    assert got.printed.stderr == b"e" * 100
    assert got.printed.stderr_truncated and not got.printed.stdout_truncated


def test_a_report_larger_than_its_cap_is_refused() -> None:
    got = read([MARKER + b"{" + b" " * 300], [])
    assert got.stop == Stop.OUTPUT_LIMIT and got.report is None


def test_the_deadline_runs_from_the_readiness_byte() -> None:
    """A booting sandbox's time starts at its readiness byte; then the program has ``timeout``."""
    start = time.monotonic()
    got = read([b"spin\n"] * 40, [b"", READY + b"booted\n"], timeout=0.5, started=False, pause=0.05)
    assert got.started and got.stop == Stop.TIMED_OUT
    assert got.printed.stderr == b"booted\n" and got.printed.stdout.startswith(b"spin\n")
    assert time.monotonic() - start >= 0.5 + 0.05  # the boot (one pause) did not count


def test_a_sandbox_that_never_gets_ready_is_not_started() -> None:
    got = read([], [b"runsc: something failed\n"], started=False)
    assert not got.started and got.stop is None and got.printed.stderr == b"runsc: something failed\n"


def test_silence_past_the_boot_wait_is_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_streams, "BOOT_SECONDS", 0.2)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        got = read_streams(out_r, err_r, marker=MARKER, cap=10, report_cap=10, timeout=5, started=False,
                           exited=lambda: False)
        assert got.stop == Stop.NOT_STARTED and not got.started
    finally:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)


def test_on_output_sees_the_program_output_and_never_the_report() -> None:
    frame = MARKER + REPORT + FRAME_END.encode()
    seen = Seen()
    got = read([b"hello\n", b"more", frame[:3], frame[3:20], frame[20:]], [b"warn\n"], pause=0.01,
               on_output=seen)
    assert got.report == REPORT
    assert seen.joined("stdout") == got.printed.stdout == b"hello\nmore"
    assert seen.joined("stderr") == b"warn\n"
    assert all(MARKER[:1] not in data for _, data in seen.calls)


def test_text_is_handed_over_at_once_while_the_program_pauses() -> None:
    """A line is not held back waiting for what follows (the marker starts with a NUL byte)."""
    handed = threading.Event()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()

    def program() -> None:
        os.write(out_w, b"step 1\n")
        waited = handed.wait(5)
        os.write(out_w, (b"step 2\n" if waited else b"held back\n") + MARKER + REPORT + FRAME_END.encode())
        os.close(out_w)
        os.close(err_w)

    def on_output(stream: str, data: bytes) -> None:
        seen(stream, data)
        handed.set()

    seen = Seen()
    writer = threading.Thread(target=program, daemon=True)
    writer.start()
    try:
        got = read_streams(out_r, err_r, marker=MARKER, cap=100, report_cap=200, timeout=10, started=True,
                           exited=lambda: False, on_output=on_output)
    finally:
        writer.join(5)
        os.close(out_r)
        os.close(err_r)
    assert seen.calls[0] == ("stdout", b"step 1\n")
    assert got.printed.stdout == b"step 1\nstep 2\n" == seen.joined("stdout")


def test_a_tail_like_the_marker_start_is_held_until_it_proves_to_be_output() -> None:
    frame = MARKER + REPORT + FRAME_END.encode()
    seen = Seen()
    got = read([b"abc" + MARKER[:4], b"xyz", frame], [], pause=0.02, on_output=seen)
    assert seen.calls[:2] == [("stdout", b"abc"), ("stdout", MARKER[:4] + b"xyz")]
    assert seen.joined("stdout") == got.printed.stdout == b"abc" + MARKER[:4] + b"xyz"


def test_without_a_report_the_held_tail_is_handed_over_at_the_end() -> None:
    seen = Seen()
    got = read([b"last words" + MARKER[:2]], [], on_output=seen)
    assert got.report is None
    assert seen.joined("stdout") == got.printed.stdout == b"last words" + MARKER[:2]


def test_the_readiness_byte_is_not_handed_over() -> None:
    seen = Seen()
    read([b"out\n"], [READY + b"program err\n"], started=False, on_output=seen)
    assert seen.joined("stderr") == b"program err\n"
    assert seen.joined("stdout") == b"out\n"


def test_runsc_messages_of_a_sandbox_that_never_started_are_not_handed_over() -> None:
    seen = Seen()
    got = read([b"junk"], [b"runsc: something failed\n"], started=False, on_output=seen)
    assert not got.started and seen.calls == []


def test_stderr_written_before_the_report_is_kept_when_both_are_read_at_once() -> None:
    """The program's last stderr and the report can be ready in the same poll, stdout first."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(err_w, b"err\n")
    os.write(out_w, b"out\n" + MARKER + REPORT + FRAME_END.encode())
    try:
        got = read_streams(out_r, err_r, marker=MARKER, cap=100, report_cap=200, timeout=5, started=True,
                           exited=lambda: False)
    finally:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
    assert got.report == REPORT
    assert (got.printed.stdout, got.printed.stderr) == (b"out\n", b"err\n")
