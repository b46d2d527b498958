"""The programs every adapter test runs, and what each adapter must show the model for them."""

from __future__ import annotations

import hashlib
import re

OUTPUT_CODE = (
    "import hashlib, os\n"
    "os.makedirs('/tmp/outputs', exist_ok=True)\n"
    "with open('/tmp/outputs/squares.csv', 'w') as f:\n"
    "    f.write('n,square\\n' + ''.join(f'{i},{i * i}\\n' for i in range(5)))\n"
    "print(hashlib.sha256(b'sandq').hexdigest(), sum(i * i for i in range(1000)))"
)
"""Prints a digest and a sum, and writes one output file."""
OUTPUT_STDOUT = f"{hashlib.sha256(b'sandq').hexdigest()} {sum(i * i for i in range(1000))}"
SQUARES_CSV = b"n,square\n0,0\n1,1\n2,4\n3,9\n4,16\n"

FAILING_CODE = "print('before')\nraise ValueError('boom')"
AFTER_FAILURE_CODE = "print('still going')"
LOOPING_CODE = "while True:\n    pass"

TIMEOUT_NOTE = "sandq: the code was stopped after its time limit of 2 s; output up to then is kept."
NO_WORKER_OPTIONS = {"timeout_seconds": 1, "queue_wait_seconds": 0.5}
"""Options for a client that no worker serves: the run gives up after 1.5 s."""


def success_text(files_went: str) -> str:
    """What a model is shown for ``OUTPUT_CODE``."""
    return (
        f"status: succeeded (exit code 0)\n--- stdout ---\n{OUTPUT_STDOUT}\n"
        f"output files ({files_went}): squares.csv (text/csv, {len(SQUARES_CSV)} bytes)\n"
    )


def assert_traceback_shown(text: str) -> None:
    """``text`` shows ``FAILING_CODE``'s exit status, its stdout, then its traceback on stderr."""
    shown = "status: failed (exit code 1)\n--- stdout ---\nbefore\n--- stderr ---\nTraceback (most recent"
    assert text.startswith(shown), text
    assert "ValueError: boom" in text


def assert_timed_out(text: str) -> None:
    """``text`` says that ``LOOPING_CODE`` was stopped at its 2 s limit."""
    assert text.startswith("status: timed_out"), text
    assert TIMEOUT_NOTE in text


def assert_no_worker(text: str) -> None:
    """``text`` says that no worker answered within ``NO_WORKER_OPTIONS``'s 1.5 s."""
    shown = r"status: no result\nsandq: no result within 1\.5 s \(execution [0-9a-f]{32}\)"
    assert re.match(shown, text), text
    assert "ask the operator to check that `sandq worker` is running" in text
