"""The worker and sandbox Dockerfiles, read as text (no Docker engine here)."""

from __future__ import annotations

import json
import re
import tomllib

from manifests import DEPLOY, ROOT, one, render

from sandq.sandbox.environment import LOCK_NAME, MOUNT_POINT, PYTHON_MINOR


def instructions(path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for word, rest in instructions(path):
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, rest))
    return out


def last(stage: list[tuple[str, str]], word: str) -> str:
    return [rest for w, rest in stage if w == word][-1]


def test_worker_image() -> None:
    dockerfile = ROOT / "Dockerfile"
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2, "multi-stage"
    final = all_stages[-1]
    assert final[0][1].endswith("AS worker")
    assert last(final, "USER") == "10001:10001"
    # ENTRYPOINT and CMD are inherited from the runtime stage the final one is built on.
    runtime = next(s for s in all_stages if s[0][1].endswith("AS runtime"))
    assert json.loads(last(runtime, "ENTRYPOINT")) == ["sandq"]
    assert json.loads(last(runtime, "CMD")) == ["worker"]
    assert "sandq" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    text = dockerfile.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r'pip install "\.\[gateway\]"', text), "one image: `sandq worker` and `sandq serve`"
    assert "useradd --system --uid 10001" in text


def test_deployment_runs_the_image_user() -> None:
    for overlay in ("gke", "dev"):
        pod = one(render(overlay), "Deployment", "sandq-worker")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 10001


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignore
    for needed in ("pyproject.toml", "README.md", "sandq/"):
        assert f"!{needed}" in ignore
    copied = {w for word, rest in instructions(ROOT / "Dockerfile") if word == "COPY" and "--from" not in rest
              for w in rest.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "sandq"}


def test_sandbox_image() -> None:
    path = DEPLOY / "sandbox-image" / "Dockerfile"
    final = stages(path)[-1]
    minor = ".".join(map(str, PYTHON_MINOR))
    assert final[0][1] == "${PYTHON_IMAGE}" and f"ARG PYTHON_IMAGE=python:{minor}-slim" in path.read_text()
    user = last(final, "USER")
    assert user.split(":")[0] not in {"0", "root"}
    assert "apt-get install" not in path.read_text()


def test_sandbox_image_builds_the_local_backends_environment() -> None:
    """The image installs the same lock with the same builder, where local sandboxes mount it."""
    path = DEPLOY / "sandbox-image" / "Dockerfile"
    build, final = stages(path)
    copied = last(build, "COPY").split()
    assert copied == [f"sandq/sandbox/{LOCK_NAME}", "sandq/sandbox/environment.py", "/tmp/"]
    for source in copied[:-1]:
        assert (ROOT / source).is_file()
    run = last(build, "RUN")
    assert f"python /tmp/environment.py build /opt/sandq-envs /usr/local/bin/python3 /tmp/{LOCK_NAME}" in run
    # an ENV_HASH that is not the lock's fails the build; it labels the image
    assert 'hash=$(python /tmp/environment.py hash)' in run and '[ "$ENV_HASH" != "$hash" ]' in run
    assert ("ARG", "ENV_HASH=") in final and ("LABEL", "dev.sandq.sandbox-env=${ENV_HASH}") in final
    assert f"mv /opt/sandq-envs/*/ {MOUNT_POINT}" in run
    assert f"COPY --from=build {MOUNT_POINT} {MOUNT_POINT}" in " ".join(" ".join(i) for i in final)
    assert last(final, "ENV").startswith(f"PATH={MOUNT_POINT}/bin:$PATH")
    ignore = (path.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore and {f"!{source}" for source in copied[:-1]} <= set(ignore)
