"""One stand-in API server with its runsc-backed cluster, and sandq settings that point at it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandq.sandbox.kubernetes.backend import KubernetesBackend
from sandq.sandbox.kubernetes.permissions import REQUIRED_PERMISSIONS
from sandq.settings import Settings
from tests.k8s_harness.cluster import Cluster
from tests.k8s_harness.standin import Call, RunningStandIn

NAMESPACE = "sandq-test"


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

    def unexpected_calls(self) -> set[tuple[str, str, str]]:
        """What sandq called here that its RBAC Role does not grant."""
        return {c.permission for c in self.calls} - REQUIRED_PERMISSIONS


def make_settings(kubeconfig: Path, workdir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "namespace": NAMESPACE,
        "kubeconfig_path": str(kubeconfig),
        "api_backoff_seconds": 0.05,
        "api_timeout_seconds": 10,
        "watch_timeout_seconds": 30,
        "unschedulable_timeout_seconds": 30,
        "kill_grace_seconds": 2,
        "api_qps": 200,
        "api_burst": 200,
        "runsc_root": workdir / "local-root",
        "bundle_dir": workdir / "local-bundles",
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@contextmanager
def kubernetes_env(**overrides: object) -> Iterator[Env]:
    """A stand-in and its cluster for the body; afterwards nothing may be left, and no call may
    have needed a permission sandq's Role does not grant."""
    workdir = Path(tempfile.mkdtemp(prefix="sandq-k8s-"))
    running = RunningStandIn().start()
    cluster = Cluster(running, workdir / "cluster")
    settings = make_settings(running.write_kubeconfig(workdir / "kubeconfig"), workdir, **overrides)
    environment = Env(running, cluster, settings, workdir)
    try:
        yield environment
        left = environment.wait_clean()
        assert not left, f"objects left behind: {left}"
        assert not environment.unexpected_calls(), f"calls beyond the Role: {environment.unexpected_calls()}"
    finally:
        cluster.close()
        running.stop()
        shutil.rmtree(workdir, ignore_errors=True)
