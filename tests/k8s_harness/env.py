"""One stand-in API server with its runsc-backed cluster, and sandq settings that point at it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandq.contract import ExecutionRequest, SandboxReport
from sandq.sandbox.kubernetes.backend import KubernetesBackend
from sandq.sandbox.kubernetes.manifests import sandbox_template_manifest
from sandq.sandbox.kubernetes.permissions import REQUIRED_PERMISSIONS, WARM_PERMISSIONS
from sandq.settings import Settings
from tests.k8s_harness.agent_sandbox import AgentSandbox, pool_manifest
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
    warm: AgentSandbox | None = None
    """agent-sandbox and its warm pool (``kubernetes_env(warm_pool=N)``)."""

    @property
    def calls(self) -> list[Call]:
        return self.running.api.calls

    def backend(self, **overrides: object) -> KubernetesBackend:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return KubernetesBackend(settings)

    def run(self, execution_id: str, request: ExecutionRequest, **overrides: object) -> SandboxReport:
        """Run one request through a backend of its own (``overrides`` on the settings), closed after."""
        backend = self.backend(**overrides)
        try:
            return backend.run(execution_id, request)
        finally:
            backend.close()

    def wait_clean(self, timeout: float = 10, keep_pool: bool = False) -> list[tuple[str, str]]:
        """What is still stored after up to ``timeout`` s; ``keep_pool``: besides the warm pool, its
        template and its unclaimed sandboxes and their pods."""
        end = time.monotonic() + timeout
        while (left := self._left(keep_pool)) and time.monotonic() < end:
            time.sleep(0.05)
        return left

    def _left(self, keep_pool: bool) -> list[tuple[str, str]]:
        kept = self.warm.pooled() if keep_pool and self.warm is not None else set()
        return [obj for obj in self.running.leftovers() if obj not in kept]

    def unexpected_calls(self) -> set[tuple[str, str, str]]:
        """What sandq called here that its RBAC Role (with the warm overlay's rules) does not grant."""
        return {c.permission for c in self.calls} - REQUIRED_PERMISSIONS - WARM_PERMISSIONS

    def uninstall_warm(self) -> None:
        """Delete the warm pool and the template (and so the pool's sandboxes), as an uninstall would."""
        if self.warm is not None:
            self.warm.uninstall(self.settings.namespace)


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
def kubernetes_env(warm_pool: int | None = None, **overrides: object) -> Iterator[Env]:
    """A stand-in and its cluster for the body; afterwards nothing may be left, and no call may
    have needed a permission sandq's Role does not grant.

    ``warm_pool``: also agent-sandbox, sandq's SandboxTemplate and a SandboxWarmPool of that many
    sandboxes, ready before the body runs; afterwards the pool and the template are deleted (the
    pool's own sandboxes with them), and no claim, sandbox or pod may be left.
    """
    workdir = Path(tempfile.mkdtemp(prefix="sandq-k8s-"))
    running = RunningStandIn().start()
    cluster = Cluster(running, workdir / "cluster")
    settings = make_settings(running.write_kubeconfig(workdir / "kubeconfig"), workdir, **overrides)
    environment = Env(running, cluster, settings, workdir)
    try:
        if warm_pool is not None:
            environment.warm = AgentSandbox(running, workdir / "warm", cluster.node_labels)
            environment.warm.apply(sandbox_template_manifest(settings))
            environment.warm.apply(pool_manifest(settings, warm_pool))
            environment.warm.wait_ready(settings.namespace, settings.warm_pool, warm_pool)
        yield environment
        environment.uninstall_warm()
        left = environment.wait_clean()
        assert not left, f"objects left behind: {left}"
        assert not environment.unexpected_calls(), f"calls beyond the Role: {environment.unexpected_calls()}"
    finally:
        if environment.warm is not None:
            environment.warm.close()
        cluster.close()
        running.stop()
        shutil.rmtree(workdir, ignore_errors=True)
