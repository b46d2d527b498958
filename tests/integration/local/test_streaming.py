"""Live output through the whole pipeline: client -> Redis -> real worker -> real runsc -> Redis stream."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandq import Client, ExecutionRequest, ExecutionResult, Settings, Status
from sandq.broker.keys import Keys
from sandq.broker.output import OutputChunk
from tests.conftest import settings_env

pytestmark = pytest.mark.usefixtures("worker")
WAIT = 120
PAUSED = "import sys, time\nprint('first')\nprint('warn', file=sys.stderr)\ntime.sleep(2)\nprint('second')"
Timed = list[tuple[float, OutputChunk]]


def collect(client: Client, request: ExecutionRequest) -> tuple[Timed, ExecutionResult]:
    handle = client.submit(request, stream=True)
    chunks: Timed = []
    for item in handle.stream(timeout=WAIT):
        if isinstance(item, ExecutionResult):
            return chunks, item
        chunks.append((time.monotonic(), item))
    raise AssertionError("the stream ended without its result")


def joined(chunks: Timed, stream: str) -> str:
    return "".join(chunk.data for _, chunk in chunks if chunk.stream == stream)


def test_chunks_arrive_while_the_code_runs(client: Client) -> None:
    chunks, result = collect(client, ExecutionRequest(code=PAUSED))
    done = time.monotonic()
    assert result.status is Status.SUCCEEDED
    first = next(at for at, chunk in chunks if "first" in chunk.data)
    assert done - first > 1.5, "the first line came only when the code ended"
    assert joined(chunks, "stdout") == result.stdout == "first\nsecond\n"
    assert joined(chunks, "stderr") == result.stderr == "warn\n"


def test_run_with_on_output_sees_everything_but_the_report(client: Client) -> None:
    seen: list[OutputChunk] = []
    code = (
        "import os\nprint('é' * 3000)\nopen('/tmp/outputs/a.txt', 'w').write('file')\n"
        "print('=====SANDQ-REPORT-fake=====')"
    )
    result = client.run(ExecutionRequest(code=code), timeout=WAIT, on_output=seen.append)
    assert result.status is Status.SUCCEEDED and [f.name for f in result.output_files] == ["a.txt"]
    assert "".join(c.data for c in seen if c.stream == "stdout") == result.stdout
    assert result.stdout == "é" * 3000 + "\n=====SANDQ-REPORT-fake=====\n"


def test_the_cap_holds_for_what_is_published(client: Client) -> None:
    code = "import sys\nsys.stdout.write('x' * 5000)\nsys.stdout.flush()\nwhile True: pass"
    chunks, result = collect(client, ExecutionRequest(code=code, max_output_bytes=1024, timeout_seconds=20))
    assert result.status is Status.OUTPUT_LIMIT_EXCEEDED
    assert joined(chunks, "stdout") == result.stdout == "x" * 1024


def test_a_timeout_ends_the_stream_with_what_came_before(client: Client) -> None:
    code = "print('spin', flush=True)\nwhile True: pass"
    chunks, result = collect(client, ExecutionRequest(code=code, timeout_seconds=2))
    assert result.status is Status.TIMED_OUT
    assert joined(chunks, "stdout") == "spin\n"


def test_the_stream_ends_with_the_status_and_expires(client: Client, settings: Settings) -> None:
    handle = client.submit(ExecutionRequest(code="print(1)"), stream=True)
    result = handle.result(timeout=WAIT)
    key = Keys(settings.queue).output(handle.id)
    deadline = time.monotonic() + 10
    while client.redis.xlen(key) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (_, last), *_ = reversed(client.redis.xrange(key))
    assert last == {b"stream": b"end", b"data": result.status.value.encode()}
    assert 0 < client.redis.ttl(key) <= settings.result_ttl_seconds


def test_without_streaming_nothing_is_published(client: Client, settings: Settings) -> None:
    handle = client.submit(ExecutionRequest(code="print('quiet')"))
    assert handle.result(timeout=WAIT).stdout == "quiet\n"
    assert not client.redis.exists(Keys(settings.queue).output(handle.id))
    with pytest.raises(ValueError, match="stream=True"):
        next(handle.stream())


def test_a_rejected_request_streams_its_result_alone(client: Client) -> None:
    handle = client.submit({"code": "print(1)", "timeout_seconds": 0}, stream=True)
    (only,) = list(handle.stream())
    assert isinstance(only, ExecutionResult) and only.status is Status.REJECTED


def test_cli_run_prints_output_live(settings: Settings, tmp_path: Path) -> None:
    script = tmp_path / "paused.py"
    script.write_text(PAUSED)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandq", "run", str(script)],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_at = time.monotonic()
    rest, err = proc.communicate(timeout=WAIT)
    ended = time.monotonic()
    assert proc.returncode == 0, err
    assert first == b"first\n" and rest == b"second\n" and err == b"warn\n"
    assert ended - first_at > 1.5 and first_at > started
