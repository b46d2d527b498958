"""Checks behind ``sandq doctor``: each says what is wrong and how to fix it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis
from kombu.utils.url import maybe_sanitize_url

from sandq.settings import Settings


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
    return [check_redis(settings), check_runsc(settings), check_kubernetes(settings)]
