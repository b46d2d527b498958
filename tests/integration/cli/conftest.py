"""Running the real ``sandq`` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO

Done = subprocess.CompletedProcess[str]
Sandq = Callable[..., Done]


@pytest.fixture
def sandq(tmp_path: Path) -> Sandq:
    """``sandq ARGS`` in a subprocess, with only the given SANDQ_ variables and no Kubernetes config."""
    home = tmp_path / "home"  # no ~/.kube/config
    home.mkdir()
    hidden = {"KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SANDQ_") and k not in hidden}
    base |= {"HOME": str(home), "SANDQ_METRICS_PORT": "0"}

    def run(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> Done:
        return subprocess.run(
            [sys.executable, "-m", "sandq", *args],
            env=base | (env or {}),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO,
        )

    return run
