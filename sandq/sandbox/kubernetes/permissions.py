"""The exact RBAC rules the backend needs in the sandbox namespace."""

from __future__ import annotations

Permission = tuple[str, str, str]
"""(apiGroup, resource, verb)."""

REQUIRED_PERMISSIONS: frozenset[Permission] = frozenset(
    {
        ("", "configmaps", "create"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
    }
)
"""Every (apiGroup, resource, verb) the worker and the janitor call, and nothing more.

ConfigMaps need no delete: each is owned by its Job and garbage-collected with it.
"""

_CLAIM_VERBS = ("create", "get", "list", "watch", "delete")
WARM_PERMISSIONS: frozenset[Permission] = frozenset(
    {("extensions.agents.x-k8s.io", "sandboxclaims", verb) for verb in _CLAIM_VERBS}
    | {("", "pods/attach", verb) for verb in ("get", "create")}
)
"""What the warm path adds: its claims (get only after a 409, as for Jobs), and the attach.

An attach is a websocket upgrade of a GET, authorized as ``get``; Kubernetes 1.35 also checks
``create`` (AuthorizePodWebsocketUpgradeCreatePermission), as SPDY always did. No verb on
sandboxes, templates or warm pools: the template and the pool are deployed, not created by workers.
"""
