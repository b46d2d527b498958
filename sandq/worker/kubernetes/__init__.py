"""The Kubernetes backend: each execution is one ephemeral gVisor-sandboxed Job.

Modules are split by concept: ``manifests`` (pure functions), ``api_client``
(configuration, rate limit, retries), ``creating``, ``watching`` (the one
shared watch), ``fetching``, ``deleting``, ``classify`` (status to result),
``backend``, ``janitor`` and ``dry_run``.
"""

from __future__ import annotations

from sandq.worker.kubernetes.dry_run import dry_run_yaml
from sandq.worker.kubernetes.janitor import run_janitor
from sandq.worker.kubernetes.permissions import REQUIRED_PERMISSIONS

__all__ = ["REQUIRED_PERMISSIONS", "dry_run_yaml", "run_janitor"]
