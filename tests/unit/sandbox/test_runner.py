"""The runner: its report is the JSON json.dumps writes (without importing json), and its poll loop."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

from sandq.sandbox import environment, runner
from sandq.sandbox.runner import (
    DONE,
    DRAIN_SECONDS,
    OUTPUT_LIMIT,
    TIMED_OUT,
    Capped,
    Deadline,
    pump,
    to_json,
)

F_SETPIPE_SZ = 1031


def test_the_report_is_the_json_that_json_dumps_writes() -> None:
    names = ["plain.txt", 'quote"back\\slash',
             "ctl\x00\x1f\x7f\n\t", "é ü 😀", "\udcff undecodable", "\u2028"]
    document = {
        "status": "succeeded",
        "exit_code": -1,
        "stdout_truncated": False,
        "output_files_truncated": True,
        "output_files": [{"name": name, "content": "QUJD+/=", "mime_type": "text/plain"} for name in names],
    }
    assert to_json(document) == json.dumps(document)
    assert json.loads(to_json(document)) == document


# ---------------------------------------------------------------------------- the poll loop


def _pipe_with(data: bytes, keep_open: bool = False) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 1 << 20)  # room for more than one read of 64 KiB
    os.write(write_end, data)
    if not keep_open:
        os.close(write_end)
    return read_end, write_end


def test_capped_keeps_exactly_the_cap_and_stops_past_it() -> None:
    sink = Capped(5)
    assert sink(b"abc") is None
    assert sink(b"defg") == OUTPUT_LIMIT
    assert (bytes(sink.data), sink.truncated) == (b"abcde", True)


def test_pump_reads_every_pipe_to_eof() -> None:
    out, err = _pipe_with(b"out"), _pipe_with(b"err")
    sinks = {out[0]: Capped(10), err[0]: Capped(10)}
    assert pump(dict(sinks), Deadline(5), lambda: False) is None
    assert [bytes(s.data) for s in sinks.values()] == [b"out", b"err"]


def test_a_reader_that_is_done_stops_the_pump_but_the_other_pipe_is_taken_whole() -> None:
    """A report on stdout comes after everything the program wrote on stderr: none of it is lost."""
    out = _pipe_with(b"REPORT", keep_open=True)
    err = _pipe_with(b"e" * 200_000, keep_open=True)
    stderr = Capped(1_000_000)

    def stdout(chunk: bytes) -> str | None:
        return DONE if chunk.endswith(b"REPORT") else None

    assert pump({out[0]: stdout, err[0]: stderr}, Deadline(5), lambda: False) == DONE
    assert len(stderr.data) == 200_000


def test_the_deadline_stops_a_silent_pipe() -> None:
    read_end, _ = _pipe_with(b"", keep_open=True)
    start = time.monotonic()
    assert pump({read_end: Capped(10)}, Deadline(0.3), lambda: False) == TIMED_OUT
    assert 0.3 <= time.monotonic() - start < 2


def test_a_moved_deadline_counts_from_the_move() -> None:
    read_end, write_end = _pipe_with(b"", keep_open=True)
    deadline = Deadline(0.2)

    def reader(chunk: bytes) -> str | None:
        deadline.move(0.6)
        return None

    threading.Timer(0.1, os.write, (write_end, b"ready")).start()
    start = time.monotonic()
    assert pump({read_end: reader}, deadline, lambda: False) == TIMED_OUT
    assert time.monotonic() - start >= 0.6


def test_once_the_process_exited_output_is_drained_for_a_bounded_time() -> None:
    """An orphan that keeps the pipe open (and writing) must not hold the result."""
    read_end, write_end = _pipe_with(b"", keep_open=True)
    stop = threading.Event()

    def orphan() -> None:
        while not stop.wait(0.02):
            os.write(write_end, b"orphan\n")

    threading.Thread(target=orphan, daemon=True).start()
    sink = Capped(1_000_000)
    start = time.monotonic()
    try:
        assert pump({read_end: sink}, Deadline(30), lambda: True) is None
    finally:
        stop.set()
    assert time.monotonic() - start < DRAIN_SECONDS + 1
    assert sink.data.startswith(b"orphan\n")


def test_the_environment_is_where_the_host_mounts_it() -> None:
    assert runner.ENV_DIR == environment.MOUNT_POINT
    prebuilt = f"{environment.MOUNT_POINT}/{environment.MATPLOTLIB_DIR}"
    assert prebuilt == runner._MPL_PREBUILT
    assert runner._CHILD_ENV["PATH"].startswith(f"{environment.MOUNT_POINT}/bin:")


def test_the_code_gets_the_prebuilt_matplotlib_files_and_sized_thread_pools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prebuilt = tmp_path / "env" / "sandq-mplconfig"
    prebuilt.mkdir(parents=True)
    (prebuilt / "fontlist-v1.json").write_text("{}")
    (prebuilt / "matplotlibrc").write_text("backend: Agg\n")
    config = tmp_path / "tmp" / ".matplotlib"
    config.parent.mkdir()
    monkeypatch.setattr(runner, "_MPL_PREBUILT", str(prebuilt))
    monkeypatch.setattr(runner, "MPL_CONFIG_DIR", str(config))
    monkeypatch.setattr(runner, "_CHILD_ENV", dict(runner._CHILD_ENV))
    runner._prepare_environment({"threads": 2})
    assert sorted(p.name for p in config.iterdir()) == ["fontlist-v1.json", "matplotlibrc"]
    assert all(p.is_symlink() and p.resolve().parent == prebuilt for p in config.iterdir())
    threads = {k: v for k, v in runner._CHILD_ENV.items() if k.endswith("_NUM_THREADS")}
    assert threads == {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def test_without_an_environment_the_code_still_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_MPL_PREBUILT", str(tmp_path / "missing"))
    monkeypatch.setattr(runner, "MPL_CONFIG_DIR", str(tmp_path / ".matplotlib"))
    monkeypatch.setattr(runner, "_CHILD_ENV", dict(runner._CHILD_ENV))
    runner._prepare_environment({"threads": 1})
    assert not (tmp_path / ".matplotlib").exists()
    assert runner._CHILD_ENV["OMP_NUM_THREADS"] == "1"
