"""The Kubernetes backend: each execution is one ephemeral gVisor-sandboxed Job, or (placed warm)
one claimed sandbox of agent-sandbox's warm pool.

Called by the worker through ``sandq.sandbox.backend.make_backend``, and by the CLI
(``sandq run --dry-run``, ``sandq janitor``). Each layer imports only those below it:
``backend`` → ``waiting`` (shared by single and indexed runs) and ``warm`` (the warm path) →
``watching`` (the one shared watch), the API verbs (``creating``, ``fetching``, ``deleting``)
and ``attaching`` (the job through ``pods/attach``) → ``api`` (configuration, rate limit,
retries); ``manifests`` (pure), ``indexed`` (planning, pure), ``classify`` (status to outcome,
pure); ``janitor``, ``dry_run`` and ``permissions`` beside them.
"""

from __future__ import annotations

from sandq.sandbox.kubernetes.dry_run import dry_run_yaml
from sandq.sandbox.kubernetes.janitor import run_janitor
from sandq.sandbox.kubernetes.permissions import REQUIRED_PERMISSIONS

__all__ = ["REQUIRED_PERMISSIONS", "dry_run_yaml", "run_janitor"]
