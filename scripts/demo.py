"""`make run`: start Redis and a worker, run real snippets through the queue, stop.

Uses the embedded default backend (local gVisor via runsc). Prints each result.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import redis

from sandq import Client, ExecutionRequest, Settings

SNIPPETS = {
    "success": "import platform\nprint('hello from', platform.system(), platform.release())",
    "error": "def divide(a, b):\n    return a / b\n\nprint(divide(1, 0))",
    "timeout": "print('working...', flush=True)\nwhile True:\n    pass",
    "png": (
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\n"
        "plt.savefig('/tmp/outputs/squares.png')\nprint('saved a plot')"
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(stack: ExitStack, workdir: Path) -> str:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    stack.callback(proc.wait)
    stack.callback(proc.terminate)
    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0"


def start_worker(stack: ExitStack, env: dict[str, str], log: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandq", "worker", "--concurrency", "2"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    stack.callback(proc.wait)
    stack.callback(proc.terminate)


def main() -> None:
    """Run the demo and print what came back."""
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = start_redis(stack, workdir)
        env = {**os.environ, "SANDQ_REDIS_URL": url}
        start_worker(stack, env, workdir / "worker.log")
        client = Client(Settings(redis_url=url))
        stack.callback(client.close)
        print(f"redis at {url}; worker log at {workdir / 'worker.log'}")
        handles = {
            name: client.submit(ExecutionRequest(code=code, timeout_seconds=3 if name == "timeout" else 60))
            for name, code in SNIPPETS.items()
        }
        for name, handle in handles.items():
            result = handle.result(timeout=180)
            print(
                f"\n=== {name}: {result.status.value} (exit {result.exit_code}, "
                f"queued {result.queue_seconds:.2f} s, ran {result.run_seconds:.2f} s)"
            )
            if result.stdout:
                print("stdout:", result.stdout.rstrip())
            if result.stderr:
                print("stderr:", result.stderr.rstrip().splitlines()[-1])
            for f in result.output_files:
                target = Path(tempfile.gettempdir()) / f"sandq-demo-{f.name}"
                target.write_bytes(f.content)
                print(f"output file: {f.name} ({len(f.content)} bytes, {f.mime_type}) saved to {target}")
        print("\n=== an ADK agent (scripted model offline, Gemini with GOOGLE_API_KEY) ===")
        run_adk_example(url)


def run_adk_example(redis_url: str) -> None:
    """The ADK example, through the same queue and worker."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import adk_agent  # noqa: PLC0415 (an example script, not a package)

    adk_agent.main(redis_url)


if __name__ == "__main__":
    main()
