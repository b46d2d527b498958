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
