"""The Kubernetes backend: each execution is one ephemeral gVisor-sandboxed Job.

Called by the worker through ``sandq.sandbox.backend.make_backend``, and by the CLI
(``sandq run --dry-run``, ``sandq janitor``). Each layer imports only those below it:
``backend`` → ``waiting`` (shared by single and indexed runs) → ``watching`` (the one shared
watch) and the API verbs (``creating``, ``fetching``, ``deleting``) → ``api`` (configuration,
rate limit, retries); ``manifests`` (pure), ``indexed`` (planning, pure), ``classify`` (status
to outcome, pure); ``janitor``, ``dry_run`` and ``permissions`` beside them.
"""

from __future__ import annotations

from sandq.sandbox.kubernetes.dry_run import dry_run_yaml
from sandq.sandbox.kubernetes.janitor import run_janitor
from sandq.sandbox.kubernetes.permissions import REQUIRED_PERMISSIONS

__all__ = ["REQUIRED_PERMISSIONS", "dry_run_yaml", "run_janitor"]
