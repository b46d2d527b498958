"""End to end: client -> real Redis -> real Celery worker -> real runsc -> client."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandq import Client, ExecutionRequest, File, Settings, Status
from sandq.broker.app import EXECUTE_TASK
from sandq.sandbox.gvisor.streams import BOOT_SECONDS
from tests.conftest import CANARY, WorkerProcess, listed_sandboxes

pytestmark = pytest.mark.usefixtures("worker")
WAIT = 120


def run(client: Client, code: str, **fields: object) -> object:
    return client.run(ExecutionRequest(code=code, **fields), timeout=WAIT)  # type: ignore[arg-type]


def test_success_returns_stdout(client: Client) -> None:
    result = client.run(ExecutionRequest(code="print(6 * 7)"), timeout=WAIT)
    assert result.status is Status.SUCCEEDED
    assert result.exit_code == 0
    assert result.stdout == "42\n"
    assert result.backend == "gvisor"
    assert result.sandbox_name
    assert result.queue_seconds is not None and result.queue_seconds >= 0
    assert result.run_seconds is not None and result.run_seconds > 0


def test_non_zero_exit_is_failed_with_its_code(client: Client) -> None:
    result = client.run(ExecutionRequest(code="import sys\nprint('bye')\nsys.exit(3)"), timeout=WAIT)
    assert (result.status, result.exit_code, result.stdout) == (Status.FAILED, 3, "bye\n")


def test_exception_gives_traceback_on_stderr_apart_from_stdout(client: Client) -> None:
    code = "print('before')\nraise ValueError('boom')"
    result = client.run(ExecutionRequest(code=code), timeout=WAIT)
    assert result.status is Status.FAILED
    assert result.exit_code == 1
    assert result.stdout == "before\n"
    assert "Traceback" in result.stderr and "ValueError: boom" in result.stderr
    assert "runner" not in result.stderr  # the runner's own frames stay hidden


def test_stderr_is_kept_apart(client: Client) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)"
    result = client.run(ExecutionRequest(code=code), timeout=WAIT)
    assert (result.status, result.stdout, result.stderr) == (Status.SUCCEEDED, "out\n", "err\n")


def test_infinite_loop_times_out_and_leaves_nothing(client: Client, settings: Settings) -> None:
    result = client.run(
        ExecutionRequest(code="print('spin', flush=True)\nwhile True: pass", timeout_seconds=2), timeout=WAIT
    )
    assert result.status is Status.TIMED_OUT
    assert result.stdout == "spin\n"  # what it printed before the deadline is kept
    # The program had its full 2 s, and the request's deadline ended it, not the 300 s default:
    # a cold boot (at most BOOT_SECONDS) comes before the deadline starts, however slow the host.
    assert result.run_seconds is not None and 2 <= result.run_seconds < BOOT_SECONDS + 2
    assert result.sandbox_name
    assert_no_trace(settings, result.sandbox_name)


def assert_no_trace(settings: Settings, name: str) -> None:
    """Teardown runs after the result is sent; within seconds, nothing of the sandbox is left."""

    def traces() -> list[str]:
        listed = listed_sandboxes(settings)
        procs = subprocess.run(
            ["pgrep", "-f", name], capture_output=True, text=True, check=False
        ).stdout.split()
        bundle = [str(settings.bundle_dir / name)] if (settings.bundle_dir / name).exists() else []
        return [n for n in listed if n == name] + procs + bundle

    deadline = time.monotonic() + 10
    while traces() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert traces() == []


def test_memory_bomb_is_oom_killed(client: Client) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))"
    result = client.run(ExecutionRequest(code=code, mem_limit="128Mi", mem_requested="64Mi"), timeout=WAIT)
    assert result.status is Status.OOM_KILLED, result


def test_flood_of_output_is_cut_at_the_limit(client: Client) -> None:
    code = "import sys\nchunk = 'x' * 65536\nfor _ in range(800):\n    sys.stdout.write(chunk)"
    result = client.run(ExecutionRequest(code=code, max_output_bytes=1024 * 1024), timeout=WAIT)
    assert result.status is Status.OUTPUT_LIMIT_EXCEEDED
    assert result.stdout_truncated
    assert len(result.stdout) == 1024 * 1024


def test_network_is_blocked(client: Client) -> None:
    code = """
import socket
for target in [("1.1.1.1", 53), ("127.0.0.1", 6379)]:
    try:
        socket.create_connection(target, timeout=2)
        print("connected", target)
    except OSError as e:
        print("blocked", target, e.errno)
try:
    socket.getaddrinfo("pypi.org", 443)
    print("dns works")
except OSError:
    print("dns blocked")
"""
    result = client.run(ExecutionRequest(code=code), timeout=WAIT)
    assert result.status is Status.SUCCEEDED, result.stderr
    assert "connected" not in result.stdout
    assert result.stdout.count("blocked") == 3, result.stdout


def test_root_filesystem_is_read_only_and_uid_is_not_root(client: Client) -> None:
    code = """
import os
print("uid", os.getuid(), os.getgid())
for path in ["/etc/sandq-probe", "/usr/sandq-probe", "/sandq-probe", "/sandq/main.py"]:
    try:
        open(path, "w").write("x")
        print("wrote", path)
    except OSError as e:
        print("denied", path)
"""
    result = client.run(ExecutionRequest(code=code), timeout=WAIT)
    assert result.status is Status.SUCCEEDED, result.stderr
    assert "uid 65534 65534" in result.stdout
    assert "wrote" not in result.stdout
    assert result.stdout.count("denied") == 4


def test_host_environment_is_not_visible(client: Client) -> None:
    code = "import os\nprint(sorted(os.environ))\nprint(open('/proc/1/environ','rb').read())"
    result = client.run(ExecutionRequest(code=code), timeout=WAIT)
    assert result.status is Status.SUCCEEDED, result.stderr
    assert CANARY not in result.stdout
    assert "SANDQ_" not in result.stdout
    assert "REDIS" not in result.stdout


def test_input_files_are_readable(client: Client) -> None:
    files = [
        File(name="data.csv", content=b"a,b\n1,2\n"),
        File(name="sub/dir/blob.bin", content=bytes(range(256))),
    ]
    code = "print(open('data.csv').read().strip())\nprint(len(open('sub/dir/blob.bin','rb').read()))"
    result = client.run(ExecutionRequest(code=code, input_files=files), timeout=WAIT)
    assert result.status is Status.SUCCEEDED, result.stderr
    assert result.stdout == "a,b\n1,2\n256\n"


def test_output_files_come_back(client: Client) -> None:
    code = """
import os, struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(b"\\x00\\xff\\x00\\x00")) + chunk(b"IEND", b"")
open("/tmp/outputs/dot.png", "wb").write(png)
os.makedirs("/tmp/outputs/nested", exist_ok=True)
open("/tmp/outputs/nested/report.txt", "w").write("done")
"""
    result = client.run(ExecutionRequest(code=code), timeout=WAIT)
    assert result.status is Status.SUCCEEDED, result.stderr
    files = {f.name: f for f in result.output_files}
    assert set(files) == {"dot.png", "nested/report.txt"}
    assert files["dot.png"].content.startswith(b"\x89PNG") and files["dot.png"].mime_type == "image/png"
    assert files["nested/report.txt"].content == b"done"
    assert not result.output_files_truncated


def test_too_many_output_files_are_flagged(client: Client, settings: Settings) -> None:
    count = settings.max_output_files + 5
    code = f"for i in range({count}):\n    open(f'/tmp/outputs/f{{i:03}}', 'w').write('x')"
    result = client.run(ExecutionRequest(code=code), timeout=WAIT)
    assert result.status is Status.SUCCEEDED
    assert len(result.output_files) == settings.max_output_files
    assert result.output_files_truncated


def test_eight_concurrent_executions_each_get_their_own_result(client: Client) -> None:
    handles = [client.submit(ExecutionRequest(code=f"print({i} * 1000)")) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda h: h.result(WAIT), handles))
    assert [r.stdout for r in results] == [f"{i * 1000}\n" for i in range(8)]
    assert [r.id for r in results] == [h.id for h in handles]
    assert len({r.sandbox_name for r in results}) == 8


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"code": ""}, "code"),
        ({"code": "print(1)", "language": "ruby"}, "language"),
        ({"code": "print(1)", "cpu_limit": "abc"}, "cpu_limit"),
        ({"code": "print(1)", "timeout_seconds": -1}, "timeout_seconds"),
        ({"code": "print(1)", "mem_limit": "999Gi"}, "mem_limit"),
    ],
)
def test_invalid_request_is_rejected_by_the_client(
    client: Client, raw: dict[str, object], field: str
) -> None:
    result = client.submit(raw).result(WAIT)
    assert result.status is Status.REJECTED
    assert result.error is not None and result.error.startswith(f"{field}:")
    assert result.sandbox_name is None


def test_invalid_request_sent_around_the_client_is_rejected_by_the_worker(client: Client) -> None:
    payload = {
        "id": "raw-1",
        "enqueued_at": "2026-01-01T00:00:00Z",
        "request": {"code": "print(1)", "cpu_limit": "abc"},
    }
    client.app.send_task(EXECUTE_TASK, args=[payload], task_id="raw-1", queue=client.settings.queue)
    result = client.wait("raw-1", WAIT)
    assert result.status is Status.REJECTED
    assert result.error is not None and result.error.startswith("cpu_limit:")
    assert result.sandbox_name is None and result.backend == ""


def test_worker_survives_and_serves_after_hostile_code(client: Client, worker: WorkerProcess) -> None:
    for code in ["import os\nos._exit(9)", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"]:
        assert client.run(ExecutionRequest(code=code), timeout=WAIT).status is Status.FAILED
    assert worker.proc.poll() is None
    assert client.run(ExecutionRequest(code="print('still here')"), timeout=WAIT).stdout == "still here\n"


async def test_run_async_does_not_block_the_event_loop(client: Client) -> None:
    import asyncio

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    result = await client.run_async(
        ExecutionRequest(code="import time\ntime.sleep(1)\nprint('ok')"), timeout=WAIT
    )
    task.cancel()
    assert result.stdout == "ok\n"
    assert ticks > 20


def test_cli_run_mirrors_exit_codes(settings: Settings, tmp_path: Path) -> None:
    from tests.conftest import settings_env

    env = settings_env(settings)
    script = tmp_path / "prog.py"
    cases = [("print('hi')", 0, "hi"), ("import sys\nsys.exit(7)", 7, ""), ("while True: pass", 124, "")]
    for code, expected, out in cases:
        script.write_text(code)
        proc = subprocess.run(
            [sys.executable, "-m", "sandq", "run", str(script), "--timeout", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert proc.returncode == expected, proc.stderr
        assert out in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "sandq", "run", "-", "--json", "--cpu-limit", "abc"],
        input="print(1)",
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert proc.returncode == 65
    assert '"status":"rejected"' in proc.stdout
