"""Shared helpers of the deploy tests: render the overlays, pick objects, read the GKE guide."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("gke", "dev", "gke-warm")
WARM_OVERLAYS = frozenset({"gke-warm"})
"""Overlays with warm sandboxes (deploy/components/warm-sandboxes)."""
SCHEMAS = Path(__file__).resolve().parent / "schemas"

WORKER_NAMESPACE = "sandq"
SANDBOX_NAMESPACE = "sandq-sandboxes"
WORKER_SERVICE_ACCOUNT = "sandq-worker"
REDIS_SECRET = "sandq-redis"
CLIENT_LABEL = "sandq.dev/client"

GUIDE_PAGE = ROOT / "docs" / "kubernetes.md"
GUIDE_BEGIN = "<!-- BEGIN GKE GUIDE (owned by the deploy work) -->"
GUIDE_END = "<!-- END GKE GUIDE -->"

# Custom resources: validated against the small schemas in schemas/ instead of
# kubernetes-validate, which knows only the built-in API.
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.json",
    ("monitoring.googleapis.com/v1", "PodMonitoring"): "gmp-podmonitoring.json",
    ("extensions.agents.x-k8s.io/v1alpha1", "SandboxTemplate"): "agent-sandbox/sandboxtemplate.json",
    ("extensions.agents.x-k8s.io/v1alpha1", "SandboxWarmPool"): "agent-sandbox/sandboxwarmpool.json",
    ("extensions.agents.x-k8s.io/v1alpha1", "SandboxClaim"): "agent-sandbox/sandboxclaim.json",
}


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl is needed to render the overlays (kubectl kustomize)"
    return path


def kustomize(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize path``, parsed."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def _rendered(overlay: str) -> str:
    return json.dumps(kustomize(DEPLOY / "overlays" / overlay))


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects of ``deploy/overlays/<overlay>`` (a fresh copy each call)."""
    return json.loads(_rendered(overlay))


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def load_yaml_file(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def gke_guide(text: str | None = None) -> str:
    """The text between the GKE guide markers of docs/kubernetes.md."""
    if text is None:
        text = GUIDE_PAGE.read_text()
    assert text.count(GUIDE_BEGIN) == 1 and text.count(GUIDE_END) == 1, "GKE guide markers missing"
    return text.split(GUIDE_BEGIN, 1)[1].split(GUIDE_END, 1)[0]


def shell_commands(markdown: str) -> list[str]:
    """The commands of the ```sh / ```bash blocks, continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", markdown, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for raw in joined.splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands
