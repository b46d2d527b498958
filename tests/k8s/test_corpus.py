"""The same snippets give the same statuses and outputs on the kubernetes backend (through the
stand-in, pods in runsc) as on the local gVisor backend."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from sandq.contract import ExecutionRequest, File, Status
from sandq.worker.backend import SandboxReport
from sandq.worker.gvisor import GVisorBackend
from tests.k8s.conftest import Env


@dataclass(frozen=True)
class Case:
    code: str
    status: Status
    stdout: str | None = None
    stderr_contains: str = ""
    extra: dict[str, object] = field(default_factory=dict)


CORPUS: dict[str, Case] = {
    "success": Case("print('hello')", Status.SUCCEEDED, "hello\n"),
    "nonzero_exit": Case("import sys\nprint('bye')\nsys.exit(3)", Status.FAILED, "bye\n"),
    "exception": Case("raise ValueError('boom')", Status.FAILED, "", "ValueError: boom"),
    "timeout": Case("print('start', flush=True)\nwhile True:\n    pass", Status.TIMED_OUT, "start\n",
                    extra={"timeout_seconds": 2}),
    "memory_bomb": Case("chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))",
                        Status.OOM_KILLED, extra={"mem_limit": "128Mi", "mem_requested": "128Mi"}),
    "output_50mb": Case("import sys\nsys.stdout.write('x' * (50 * 1024 * 1024))",
                        Status.OUTPUT_LIMIT_EXCEEDED),
    "network_blocked": Case(
        "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    print('open')\n"
        "except OSError:\n    print('blocked')", Status.SUCCEEDED, "blocked\n"),
    "readonly_root": Case(
        "try:\n    open('/usr/sandq-test', 'w')\n    print('writable')\nexcept OSError as e:\n"
        "    print('read-only', type(e).__name__)", Status.SUCCEEDED),
    "not_root": Case("import os\nprint(os.getuid() != 0, os.getgid() != 0)", Status.SUCCEEDED, "True True\n"),
    "input_files": Case("print(open('data/in.csv').read(), end='')", Status.SUCCEEDED, "a,b\n1,2\n",
                        extra={"input_files": [File(name="data/in.csv", content=b"a,b\n1,2\n")]}),
    "output_files": Case(
        "import os\nos.makedirs('/tmp/outputs/sub', exist_ok=True)\n"
        "open('/tmp/outputs/sub/r.txt', 'w').write('result')\nprint('done')", Status.SUCCEEDED, "done\n"),
    "stderr_apart": Case("import sys\nprint('out')\nprint('err', file=sys.stderr)", Status.SUCCEEDED, "out\n",
                         "err"),
    "tmp_writable": Case("open('/tmp/x', 'w').write('1')\nprint(open('/tmp/x').read())",
                         Status.SUCCEEDED, "1\n"),
}


def _comparable(report: SandboxReport) -> dict[str, object]:
    return report.model_dump(
        include={"status", "exit_code", "stdout", "stderr", "stdout_truncated", "stderr_truncated",
                 "output_files", "output_files_truncated"}
    )


@pytest.mark.timeout(240)
def test_corpus_matches_local_gvisor(env: Env) -> None:
    local = GVisorBackend(env.settings)
    k8s = env.backend()
    names = list(CORPUS)
    requests = {n: ExecutionRequest(code=CORPUS[n].code, **CORPUS[n].extra) for n in names}  # type: ignore[arg-type]
    try:
        with ThreadPoolExecutor(2) as pool:
            remote = dict(zip(names, pool.map(lambda n: k8s.run(f"corpus-{n}".replace("_", "-"), requests[n]),
                                              names), strict=True))
        here = {n: local.run(f"local-{n}".replace("_", "-"), requests[n]) for n in names}
    finally:
        k8s.close()
        local.close()
    for name in names:
        case = CORPUS[name]
        got, want = remote[name], here[name]
        assert got.status == case.status, (name, got)
        assert _comparable(got) == _comparable(want), name
        if case.stdout is not None:
            assert got.stdout == case.stdout, name
        assert case.stderr_contains in got.stderr, name
        assert got.sandbox_name and got.sandbox_name.startswith("sq-corpus-")
    assert remote["readonly_root"].stdout.startswith("read-only")
    assert "err" not in remote["stderr_apart"].stdout
    assert remote["output_50mb"].stdout_truncated
    assert [(f.name, f.content) for f in remote["output_files"].output_files] == [("sub/r.txt", b"result")]
