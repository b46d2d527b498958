"""Fixtures for the Kubernetes backend: a stand-in API server with a runsc-backed cluster."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandq.settings import Settings
from sandq.worker.kubernetes.backend import KubernetesBackend
from tests.k8s_harness.cluster import Cluster
from tests.k8s_harness.standin import Call, RunningStandIn

NAMESPACE = "sandq-test"
OBSERVED: set[tuple[str, str, str]] = set()
"""Every (apiGroup, resource, verb) sandq called at a stand-in in this session."""


@dataclass
class Env:
    """One fresh stand-in, its cluster, and settings pointing at it."""

    running: RunningStandIn
    cluster: Cluster
    settings: Settings
    workdir: Path

    @property
    def calls(self) -> list[Call]:
        return self.running.api.calls

    def backend(self, **overrides: object) -> KubernetesBackend:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return KubernetesBackend(settings)

    def wait_clean(self, timeout: float = 10) -> list[tuple[str, str]]:
        end = time.monotonic() + timeout
        while (left := self.running.leftovers()) and time.monotonic() < end:
            time.sleep(0.05)
        return left


def make_settings(kubeconfig: Path, workdir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "namespace": NAMESPACE,
        "kubeconfig_path": str(kubeconfig),
        "api_backoff_seconds": 0.05,
        "api_timeout_seconds": 10,
        "watch_timeout_seconds": 30,
        "unschedulable_timeout_seconds": 1,
        "kill_grace_seconds": 2,
        "api_qps": 200,
        "api_burst": 200,
        "runsc_root": workdir / "local-root",
        "bundle_dir": workdir / "local-bundles",
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def env() -> Iterator[Env]:
    workdir = Path(tempfile.mkdtemp(prefix="sandq-k8s-"))
    running = RunningStandIn().start()
    cluster = Cluster(running, workdir / "cluster")
    settings = make_settings(running.write_kubeconfig(workdir / "kubeconfig"), workdir)
    environment = Env(running, cluster, settings, workdir)
    try:
        yield environment
        left = environment.wait_clean()
        assert not left, f"objects left behind: {left}"
    finally:
        OBSERVED.update(c.permission for c in running.api.calls)
        cluster.close()
        running.stop()
