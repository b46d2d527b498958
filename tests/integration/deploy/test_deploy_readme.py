"""The GKE guide (docs/kubernetes.md) and the manifests agree: paths, namespaces, names, labels."""

from __future__ import annotations

import re
import shlex

import yaml
from manifests import (
    CLIENT_LABEL,
    GUIDE_BEGIN,
    GUIDE_END,
    GUIDE_PAGE,
    REDIS_SECRET,
    ROOT,
    SANDBOX_NAMESPACE,
    WORKER_NAMESPACE,
    WORKER_SERVICE_ACCOUNT,
    find,
    gke_guide,
    one,
    render,
    shell_commands,
)

GKE_OVERLAY = "deploy/overlays/gke"
EXTERNAL_NAMESPACES = {"keda"}  # installed by the guide, not by the overlay
KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet", "scaledobject": "ScaledObject"}
SECRETS = {REDIS_SECRET: "password", "sandq-gateway": "secret"}
"""The Secrets the overlay reads but never holds, and their keys."""


def _flag(words: list[str], *names: str) -> list[str]:
    found = []
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                found.append(words[i + 1])
            elif word.startswith(name + "="):
                found.append(word.split("=", 1)[1])
    return found


def guide_problems(guide: str, objects: list[dict]) -> list[str]:
    """Every disagreement between the guide's commands and the rendered GKE overlay."""
    problems: list[str] = []
    commands = shell_commands(guide)
    namespaces = {o["metadata"]["name"] for o in find(objects, "Namespace")}
    accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in find(objects, "ServiceAccount")}
    if not any(c.startswith("gcloud container node-pools create") and "--sandbox type=gvisor" in c
               for c in commands):
        problems.append("no gVisor node pool (--sandbox type=gvisor)")
    applies = [c for c in commands if c.startswith("kubectl apply -k")]
    if [shlex.split(c)[3] for c in applies] != [GKE_OVERLAY]:
        problems.append(f"expected one `kubectl apply -k {GKE_OVERLAY}`, found {applies}")
    for command in commands:
        words = shlex.split(command, comments=True)
        words = words[: words.index("|")] if "|" in words else words
        if words[:1] == ["kubectl"]:
            for namespace in _flag(words, "-n", "--namespace"):
                if namespace not in namespaces | EXTERNAL_NAMESPACES:
                    problems.append(f"unknown namespace {namespace!r} in: {command}")
            for user in _flag(words, "--as"):
                parts = user.split(":")
                if parts[:2] != ["system", "serviceaccount"] or (parts[2], parts[3]) not in accounts:
                    problems.append(f"unknown service account {user!r}")
            if "secret" in words and "generic" in words:
                name = words[words.index("generic") + 1]
                if name not in SECRETS or _flag(words, "-n", "--namespace") != [WORKER_NAMESPACE]:
                    problems.append(f"the Secrets are {sorted(SECRETS)} in {WORKER_NAMESPACE}: {command}")
                elif not any(w.startswith(f"--from-literal={SECRETS[name]}=") for w in words):
                    problems.append(f"the Secret {name}'s key is {SECRETS[name]!r}")
            for word in words:
                kind, _, name = word.partition("/")
                ns = _flag(words, "-n", "--namespace")
                if kind in KINDS and name and ns and ns[0] in namespaces:
                    matches = [o for o in find(objects, KINDS[kind], name)
                               if o["metadata"]["namespace"] == ns[0]]
                    if not matches:
                        problems.append(f"no {KINDS[kind]} {ns[0]}/{name}")
        for path in re.findall(r"(?<![\w/])deploy/[\w./-]+", command):
            if not (ROOT / path).exists():
                problems.append(f"no such path {path}")
        if words[:2] == ["sed", "-i"]:
            old = words[2].split("|")[1]
            for path in words[3:]:
                if old not in (ROOT / path).read_text():
                    problems.append(f"{path} has no placeholder {old!r}")
    if not any(f"> {GKE_OVERLAY}/apiserver.env" in c and "APISERVER_CIDR=" in c for c in commands):
        problems.append("the guide must write APISERVER_CIDR into the overlay's apiserver.env")
    for name in (WORKER_NAMESPACE, SANDBOX_NAMESPACE, WORKER_SERVICE_ACCOUNT, REDIS_SECRET):
        if f"`{name}`" not in guide:
            problems.append(f"the guide never names `{name}`")
    snippets = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, flags=re.S)]
    agent = next((s for s in snippets if "sandq.dev" in str(s)), None)
    if not agent or agent["metadata"]["labels"] != {CLIENT_LABEL: "true"}:
        problems.append(f"the agent example must carry {CLIENT_LABEL}: 'true'")
    else:
        env = {e["name"]: e for e in agent["spec"]["containers"][0]["env"]}
        worker = one(objects, "Deployment", "sandq-worker")["spec"]["template"]["spec"]["containers"][0]
        worker_env = {e["name"]: e for e in worker["env"]}
        for name in ("REDIS_PASSWORD", "SANDQ_REDIS_URL"):
            if env.get(name) != worker_env[name]:
                problems.append(f"the agent's {name} differs from the workers'")
    return problems


def test_guide_is_between_the_markers() -> None:
    text = GUIDE_PAGE.read_text()
    assert text.index(GUIDE_BEGIN) < text.index(GUIDE_END)
    assert "## Deploying to GKE" in gke_guide(text)


def test_guide_agrees_with_the_manifests() -> None:
    assert guide_problems(gke_guide(), render("gke")) == []


def test_guide_check_catches_drift() -> None:
    guide = gke_guide()
    drifted = {
        "overlay": guide.replace(f"kubectl apply -k {GKE_OVERLAY}", "kubectl apply -k deploy/overlays/prod"),
        "namespace": guide.replace("-n sandq-sandboxes", "-n sandboxes"),
        "account": guide.replace("serviceaccount:sandq:sandq-worker", "serviceaccount:sandq:worker"),
        "secret": guide.replace("secret generic sandq-redis", "secret generic redis"),
        "gateway secret": guide.replace("gateway --from-literal=secret=", "gateway --from-literal=k="),
        "node pool": guide.replace("--sandbox type=gvisor", ""),
        "label": guide.replace('sandq.dev/client: "true"', 'sandq/client: "true"'),
        "kind/name": guide.replace("statefulset/redis", "statefulset/redis-master"),
    }
    for what, text in drifted.items():
        assert text != guide, what
        assert guide_problems(text, render("gke")), f"{what} drift went unnoticed"
