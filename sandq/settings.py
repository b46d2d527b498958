"""All of sandq's settings, read from ``SANDQ_`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandq.contract import MAX_TIMEOUT_SECONDS, check_quantity


class TenantLimits(BaseModel):
    """Caps of one tenant that differ from the per-tenant defaults."""

    max_queued: int | None = Field(default=None, ge=1)
    max_in_flight: int | None = Field(default=None, ge=1)


class Settings(BaseSettings):
    """sandq configuration. Every field maps to ``SANDQ_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="SANDQ_", extra="ignore")

    # Broker
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description=(
            "Redis for broker and results; user:password@ for ACLs; rediss:// for TLS, with"
            " ?ssl_ca_certs=<CA file> (&ssl_certfile=&ssl_keyfile= for client certificates)."
        ),
    )
    result_ttl_seconds: int = Field(default=86400, ge=60, description="How long results are kept.")
    queue: str = Field(default="sandq", description="Name of the execution queue.")

    # Backpressure (admission at submit, in-flight semaphore at run)
    max_queued: int = Field(default=100_000, ge=1, description="Executions queued at once, all tenants.")
    max_queued_per_tenant: int = Field(default=10_000, ge=1, description="Executions queued per tenant.")
    max_in_flight: int = Field(default=1000, ge=1, description="Sandboxes running at once, all workers.")
    max_in_flight_per_tenant: int = Field(default=1000, ge=1, description="Sandboxes running per tenant.")
    tenant_overrides: dict[str, TenantLimits] = Field(
        default_factory=dict, description='Per-tenant caps (JSON), e.g. {"acme": {"max_in_flight": 5}}.'
    )
    lease_seconds: float = Field(
        default=30, ge=1, description="In-flight lease; a dead worker's slots come back after it."
    )
    queued_ttl_seconds: int = Field(
        default=86400, ge=60, description="After this long an admitted execution stops counting as queued."
    )
    cap_retry_seconds: float = Field(
        default=0.05, gt=0, description="Delay before a batch of Indexed Jobs refused by a cap asks again."
    )
    handoff_seconds: float = Field(
        default=0.5, gt=0, description="How often each worker hands free slots to parked executions "
        "(besides at every release).",
    )
    active_tenant_seconds: float = Field(
        default=10, gt=0, description="Seconds a tenant counts as active after a submission; active "
        "tenants share the slots.",
    )
    fair_reserve: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description=(
            "Fraction of max_in_flight that a tenant above its fair share leaves free while other tenants "
            "are active, so that their next executions start without waiting for a slot."
        ),
    )
    retry_after_seconds: float = Field(
        default=1.0, gt=0, description="The retry_after hint of a refused submission."
    )

    # Worker
    backend: Literal["gvisor", "kubernetes", "simulated"] = Field(
        default="gvisor",
        description="Sandbox backend the worker runs requests on (simulated: queue benchmarks only).",
    )
    simulated_run_seconds: float = Field(
        default=0.03, ge=0, description="How long the simulated backend sleeps per execution."
    )
    concurrency: int = Field(default=4, ge=1, le=512, description="Executions per worker at once.")
    max_timeout_seconds: int = Field(
        default=MAX_TIMEOUT_SECONDS,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description="Longest timeout a request may ask for.",
    )
    max_cpu_limit: str = Field(default="2", description="Largest cpu_limit a request may ask for.")
    max_mem_limit: str = Field(default="4Gi", description="Largest mem_limit a request may ask for.")
    max_output_files: int = Field(default=32, ge=0, description="Most output files returned.")
    max_output_files_bytes: int = Field(
        default=8 * 1024 * 1024, ge=0, description="Most bytes of output files returned."
    )
    tmp_size: str = Field(default="64Mi", description="Size of the sandbox's writable /tmp.")
    max_retries: int = Field(default=2, ge=0, description="Retries of infrastructure faults.")
    task_events: bool = Field(
        default=False,
        description="Send Celery task events (what Flower shows); each costs Redis publishes per execution.",
    )
    metrics_port: int | None = Field(
        default=9808, ge=0, le=65535, description="Port of the worker's Prometheus /metrics (None or 0: off)."
    )
    redelivery_seconds: int = Field(
        default=60,
        ge=2,
        description="The broker's visibility timeout: a dead worker's executions are delivered again "
        "after about this long (live workers keep theirs with a heartbeat).",
    )
    redis_outage_seconds: float = Field(
        default=20,
        ge=0,
        description="How long a worker's own Redis calls (its gates, slots and cancellations) retry "
        "while Redis is unreachable, e.g. restarting, before the execution goes back to the queue.",
    )

    # Local gVisor backend
    runsc_path: str = Field(default="runsc", description="The runsc binary.")
    runsc_root: Path = Field(
        default=Path("/run/sandq/runsc"), description="runsc state directory (owned by sandq)."
    )
    bundle_dir: Path = Field(default=Path("/run/sandq/bundles"), description="Where OCI bundles are written.")
    sandbox_python: str = Field(
        default="/usr/bin/python3", description="Interpreter inside the local sandbox."
    )
    sandbox_env_dir: Path = Field(
        default=Path("/var/lib/sandq/sandbox-env"),
        description="Where the sandbox environment (the locked libraries) is built, one directory per hash.",
    )
    sandbox_extra_requirements: Path | None = Field(
        default=None, description="Extra requirements file (wheels only) for the sandbox environment."
    )
    warm_pool_min: int = Field(
        default=2, ge=0, le=128, description="Fewest sandboxes of the default shape kept booted per worker, "
        "even when idle (about 22 MiB each).",
    )
    warm_pool_max: int = Field(
        default=16, ge=0, le=128, description="Most sandboxes of the default shape booted ahead of demand "
        "per worker: the pool's memory bound (0: always start cold; it caps warm_pool_min).",
    )
    warm_pool_reserve: int = Field(
        default=2, ge=0, le=16, description="Warm sandboxes that batch work leaves to interactive work while "
        "interactive work is around.",
    )
    max_booting: int = Field(
        default=0, ge=0, le=128, description="Local sandboxes booting at once per worker process (0: three "
        "per core). Requests wait their turn, interactive first; more boots at once end no sooner and "
        "slow running code down.",
    )
    max_booting_ahead: int = Field(
        default=0, ge=0, le=128, description="A warm sandbox boots ahead of demand only while fewer local "
        "sandboxes than this boot (0: one per core, and one more for 10 s after a request found no sandbox "
        "ready); requests waiting for one may use all of max_booting. "
        "Boots slow running code down, so the pool refills a few at a time while it still has sandboxes.",
    )
    warm_pool_idle_seconds: float = Field(
        default=30, gt=0, description="Window of the arrival rate the warm pool is sized from: after this "
        "long without demand it is back at warm_pool_min.",
    )
    interactive_reserve: int = Field(
        default=1, ge=0, description="Executions at once (of concurrency) that batch work leaves to "
        "interactive work while interactive work is around.",
    )
    interactive_reserve_seconds: float = Field(
        default=30, gt=0, description="How long after the last interactive execution the reserves "
        "(interactive_reserve, warm_pool_reserve) hold; then batch work may use everything.",
    )
    sweep_interval_seconds: float = Field(
        default=30, gt=0, description="How often each worker process removes sandboxes of dead workers."
    )
    nproc_limit: int = Field(default=256, ge=8, description="RLIMIT_NPROC inside a sandbox.")
    kill_grace_seconds: float = Field(
        default=2.0,
        ge=0.1,
        description="Kubernetes: seconds a pod gets past its timeout to report (in activeDeadlineSeconds).",
    )
    nofile_limit: int = Field(default=1024, ge=16, description="RLIMIT_NOFILE inside a sandbox.")

    # Kubernetes backend (parity with ADK's GkeCodeExecutor where names match)
    namespace: str = Field(default="sandq-sandboxes", description="Namespace of sandbox Jobs.")
    image: str = Field(default="python:3.11-slim", description="Sandbox container image.")
    kubeconfig_path: str | None = Field(
        default=None, description="Explicit kubeconfig; else in-cluster; else ~/.kube/config."
    )
    kubeconfig_context: str | None = Field(default=None, description="Context in the kubeconfig.")
    runtime_class: str | None = Field(default="gvisor", description="RuntimeClass of sandbox pods.")
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"sandbox.gke.io/runtime": "gvisor"},
        description="Node selector of sandbox pods (JSON).",
    )
    tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [
            {"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor", "effect": "NoSchedule"}
        ],
        description="Tolerations of sandbox pods (JSON).",
    )
    sandbox_uid: int = Field(default=65534, ge=1, description="uid and gid of sandbox pods.")
    ephemeral_storage_limit: str = Field(default="128Mi", description="Sandbox ephemeral-storage limit.")
    job_ttl_seconds: int = Field(
        default=600, ge=0, description="ttlSecondsAfterFinished: a safety net, sandq deletes Jobs itself."
    )
    unschedulable_timeout_seconds: float = Field(
        default=120,
        ge=1,
        description="How long a sandbox pod may stay unschedulable, or a Job go without any pod (a quota "
        "or an admission webhook refusing it); then the execution is retried as an infrastructure fault.",
    )
    start_timeout_seconds: float = Field(
        default=120,
        ge=1,
        description="How long a scheduled sandbox pod may take to start its code (image pull, volume "
        "mounts, boot); part of its activeDeadlineSeconds.",
    )
    eviction_backoff_seconds: float = Field(
        default=10,
        ge=0,
        description="The Job controller's wait before it replaces an evicted pod (10 s in Kubernetes); "
        "a Job's deadline leaves room for one replacement.",
    )
    image_pull_timeout_seconds: float = Field(
        default=60,
        gt=0,
        description="How long the kubelet may keep retrying a failing image pull (ErrImagePull, "
        "ImagePullBackOff) before sandq retries the execution as an infrastructure fault.",
    )
    container_log_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=256 * 1024,
        description="The kubelet's containerLogMaxSize on sandbox nodes (10 MiB on GKE): a pod's report "
        "is kept under it, so log rotation cannot cut it.",
    )
    tmp_medium: Literal["Memory", ""] = Field(
        default="Memory",
        description='Medium of a sandbox pod\'s /tmp emptyDir: "Memory" (a tmpfs of tmp_size, full at '
        'its size, as a local sandbox\'s) or "" (node disk: the kubelet evicts a pod past tmp_size).',
    )
    api_qps: float = Field(default=20, gt=0, description="Kubernetes API calls per second per worker.")
    api_burst: int = Field(default=40, ge=1, description="Burst of Kubernetes API calls per worker.")
    janitor_grace_seconds: int = Field(
        default=300, ge=0, description="Age past its deadline at which the janitor deletes a Job."
    )
    api_retries: int = Field(
        default=5, ge=0, description="Retries of one Kubernetes API call on an infrastructure fault."
    )
    api_backoff_seconds: float = Field(
        default=0.5, gt=0, description="First backoff between Kubernetes API retries (doubles each time)."
    )
    api_timeout_seconds: float = Field(
        default=30, gt=0, description="Connect and read timeout of one Kubernetes API call."
    )
    watch_timeout_seconds: int = Field(
        default=300, ge=1, description="Server-side timeout of the shared watch before it reconnects."
    )
    indexed_batch_size: int = Field(
        default=100, ge=1, le=1000, description="Most executions of a batch run as one Indexed Job."
    )
    indexed_parallelism: int = Field(
        default=20, ge=1, description="Pods of one Indexed Job running at once (its parallelism)."
    )

    # Kubernetes warm sandboxes (agent-sandbox's SandboxClaim, SandboxTemplate, SandboxWarmPool)
    kubernetes_mode: Literal["job", "warm"] = Field(
        default="job",
        description="Where a request that names no placement runs: a Job each, or a claimed sandbox of the "
        "warm pool (requests of its shape; other shapes run as Jobs).",
    )
    sandbox_template: str = Field(
        default="python-sandbox-template",
        description="The SandboxTemplate of warm sandboxes (GkeCodeExecutor's sandbox_template).",
    )
    warm_pool: str = Field(
        default="sandq-warm", description="The SandboxWarmPool a claim takes its sandbox from."
    )
    warm_claim_timeout_seconds: float = Field(
        default=60,
        gt=0,
        description="How long a claim may wait for its sandbox (an empty pool starts one cold); then the "
        "claim is deleted and the execution retried as an infrastructure fault.",
    )

    @field_validator("redis_url")
    @classmethod
    def _verify_tls(cls, url: str) -> str:
        """A rediss:// URL verifies the server's certificate unless it says otherwise."""
        if url.startswith("rediss://") and "ssl_cert_reqs=" not in url:
            return url + ("&" if "?" in url else "?") + "ssl_cert_reqs=required"
        return url

    @field_validator("max_cpu_limit", "max_mem_limit", "tmp_size", "ephemeral_storage_limit")
    @classmethod
    def _quantity(cls, value: str) -> str:
        return check_quantity(value)

    @property
    def heartbeat_seconds(self) -> float:
        """How often a worker refreshes its unacknowledged messages, and Redis is checked for stale ones."""
        return self.redelivery_seconds / 5

    def queued_cap(self, tenant: str) -> int:
        """How many executions ``tenant`` may have queued."""
        override = self.tenant_overrides.get(tenant)
        return override.max_queued if override and override.max_queued else self.max_queued_per_tenant

    @property
    def reserved_slots(self) -> int:
        """Slots kept free for tenants below their fair share (``fair_reserve`` of ``max_in_flight``)."""
        return int(self.max_in_flight * self.fair_reserve)

    def in_flight_cap(self, tenant: str) -> int:
        """How many sandboxes ``tenant`` may have running."""
        override = self.tenant_overrides.get(tenant)
        if override and override.max_in_flight:
            return override.max_in_flight
        return self.max_in_flight_per_tenant

    @property
    def tmp_size_bytes(self) -> int:
        """``tmp_size`` in bytes."""
        return int(parse_quantity(self.tmp_size))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
