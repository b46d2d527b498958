"""No host or worker credential is visible inside a sandbox, even to code that goes looking."""

from __future__ import annotations

import json
from pathlib import Path

from sandq import Client, ExecutionRequest, Status
from tests.conftest import WorkerProcess, settings_env
from tests.integration.security.conftest import HOST_SECRETS

PROBE = """
import json, os
def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"unreadable: errno {e.errno}"
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return f"unlistable: errno {e.errno}"
print(json.dumps({
    "environ": dict(os.environ),
    "files": {path: read(path) for path in PATHS},
    "root": listing("/"),
    "sandq": listing("/sandq"),
}))
"""

CREDENTIAL_FILES = [
    "/var/run/secrets/kubernetes.io/serviceaccount/token",
    "/run/secrets/kubernetes.io/serviceaccount/token",
    "/root/.kube/config",
    "/etc/shadow",
]


def test_sandbox_sees_no_worker_credentials(
    password_stack: tuple[WorkerProcess, Client], tmp_path: Path
) -> None:
    _, client = password_stack
    settings = client.settings
    assert "@" in settings.redis_url  # the worker's Redis URL carries its password
    host_kubeconfig = tmp_path / "kubeconfig"  # a credential file on the worker's host
    host_kubeconfig.write_text("token: " + HOST_SECRETS["SANDQ_TEST_TOKEN"])
    paths = ["/proc/1/environ", "/proc/self/environ", *CREDENTIAL_FILES, str(host_kubeconfig)]
    result = client.run(ExecutionRequest(code=f"PATHS = {paths!r}\n{PROBE}"), timeout=120)
    assert result.status is Status.SUCCEEDED, result.stderr
    seen = json.loads(result.stdout)

    worker_env = settings_env(settings) | HOST_SECRETS
    assert not [name for name in seen["environ"] if name in HOST_SECRETS or name.startswith("SANDQ_")]
    for path in [*CREDENTIAL_FILES, str(host_kubeconfig)]:
        assert seen["files"][path].startswith("unreadable"), path
    assert "root" not in seen["root"] and "var" not in seen["root"], seen["root"]
    assert isinstance(seen["sandq"], list), seen["sandq"]

    password = settings.redis_url.split("@")[0].rsplit(":", 1)[1]
    secrets = {settings.redis_url, password, *HOST_SECRETS.values()}
    secrets |= {v for k, v in worker_env.items() if k.startswith("SANDQ_") and len(v) >= 8}
    secrets.discard(settings.sandbox_python)  # the interpreter the sandbox itself runs
    assert sorted(s for s in secrets if s in result.stdout + result.stderr) == []
