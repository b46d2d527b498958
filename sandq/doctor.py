"""Checks behind ``sandq doctor``: each says what is wrong and how to fix it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis
from kombu.utils.url import maybe_sanitize_url

from sandq.sandbox import environment
from sandq.settings import Settings

_IMAGE_ENV_TAG = re.compile(r"env-([0-9a-f]{16})(?![0-9a-f])")
"""How a sandbox image's tag names the hash of the environment it holds (``sandq-sandbox:env-<hash>``)."""


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def check_redis(settings: Settings) -> Check:
    """Redis answers PING at ``SANDQ_REDIS_URL`` (shown with its password masked)."""
    url = maybe_sanitize_url(settings.redis_url)
    try:
        redis.Redis.from_url(settings.redis_url, socket_timeout=3).ping()
    except redis.AuthenticationError as error:
        return Check(
            "redis",
            False,
            f"{url}: authentication failed ({error}). Check the user and password in SANDQ_REDIS_URL.",
        )
    except redis.RedisError as error:
        return Check("redis", False, f"{url}: {error}. Start redis-server or set SANDQ_REDIS_URL.")
    return Check("redis", True, f"{url} answers")


def check_runsc(settings: Settings) -> Check:
    """runsc is installed and usable (root is needed for cgroup limits)."""
    required = settings.backend == "gvisor"
    path = shutil.which(settings.runsc_path)
    if path is None:
        return Check(
            "runsc", False, "not found: apt-get install runsc (Debian 12+), or set SANDQ_RUNSC_PATH", required
        )
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout.split(
        "\n"
    )[0]
    if os.geteuid() != 0:
        return Check(
            "runsc", False, f"{version}, but the worker must run as root to apply cgroup limits", required
        )
    if not Path(settings.sandbox_python).exists():
        return Check("runsc", False, f"{settings.sandbox_python} missing: set SANDQ_SANDBOX_PYTHON", required)
    return Check("runsc", True, f"{version} at {path}", required)


def check_sandbox_env(settings: Settings) -> Check:
    """The local sandbox environment is built, from the shipped lock and the extra requirements, for
    the sandbox interpreter as it is now (needed only for the gvisor backend)."""
    required = settings.backend == "gvisor"
    try:
        env = environment.location(settings)
        manifest = environment.validate(
            env, settings.sandbox_python, environment.default_lock(), settings.sandbox_extra_requirements
        )
    except environment.SandboxEnvError as error:
        fix = "`make sandbox-env` or `sandq worker` builds it; remove a stale one first"
        return Check("sandbox-env", False, f"{error}. {fix}", required)
    detail = f"{manifest.hash} at {env}: Python {manifest.python_version}, {len(manifest.packages)} packages"
    return Check("sandbox-env", True, detail, required)


def check_sandbox_image(settings: Settings) -> Check:
    """``SANDQ_IMAGE`` holds the environment of the same lock, as far as its tag (``env-<hash>``) tells."""
    required = settings.backend == "kubernetes"
    try:
        expected = environment.env_hash(environment.default_lock(), settings.sandbox_extra_requirements)
    except environment.SandboxEnvError as error:
        return Check("sandbox-image", False, str(error), required)
    tag = settings.image.rpartition("/")[2].partition("@")[0].partition(":")[2]
    found = _IMAGE_ENV_TAG.search(tag)
    if found is None:
        return Check(
            "sandbox-image",
            False,
            f"{settings.image} does not say which lock it was built from: tag it env-{expected} "
            f"(docs/kubernetes.md), or check that its /opt/sandq-env/sandq-env.json says hash {expected}",
            required=False,
        )
    if found.group(1) != expected:
        return Check(
            "sandbox-image",
            False,
            f"{settings.image} holds environment {found.group(1)}, this sandq's lock is {expected}: "
            "rebuild and push the sandbox image (deploy/sandbox-image/Dockerfile)",
            required,
        )
    return Check("sandbox-image", True, f"{settings.image} holds this lock's environment", required)


def check_kubernetes(settings: Settings) -> Check:
    """A Kubernetes configuration can be loaded (needed only for the kubernetes backend)."""
    from kubernetes import config  # noqa: PLC0415

    required = settings.backend == "kubernetes"
    try:
        if settings.kubeconfig_path:
            config.load_kube_config(config_file=settings.kubeconfig_path, context=settings.kubeconfig_context)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config(context=settings.kubeconfig_context)
    except (config.ConfigException, OSError) as error:
        return Check(
            "kubernetes",
            False,
            f"no configuration ({error}); set SANDQ_KUBECONFIG_PATH or run in-cluster",
            required,
        )
    return Check(
        "kubernetes", True, f"configuration loaded; sandboxes go to namespace {settings.namespace}", required
    )


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in order."""
    return [
        check_redis(settings),
        check_runsc(settings),
        check_sandbox_env(settings),
        check_sandbox_image(settings),
        check_kubernetes(settings),
    ]
