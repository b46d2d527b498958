"""Deleting a Job (its pods and ConfigMap go with it) or a SandboxClaim (its sandbox and pod go
with it): background propagation, ownerReferences."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes.api import KubeApi

log = logging.getLogger(__name__)

NOT_FOUND = 404


def delete_object(api: KubeApi, kind: str, delete: Callable[..., Any], name: str) -> bool:
    """Delete ``name`` (``delete(name, propagation_policy=...)``); False if it was already gone.

    A failure is logged, not raised: the janitor (or a claim's own expiry) removes what is left.
    """
    try:
        api.call(f"delete {kind}", delete, name, propagation_policy="Background")
    except ApiException as error:
        if error.status == NOT_FOUND:
            return False
        log.warning("could not delete %s %s: HTTP %s %s", kind, name, error.status, error.reason)
        return False
    except InfrastructureFault as error:
        log.warning("could not delete %s %s: %s; it will be removed later", kind, name, error)
        return False
    return True


def delete_job(api: KubeApi, name: str) -> bool:
    """Delete Job ``name`` with background propagation; False if it was already gone."""
    delete = functools.partial(api.batch.delete_namespaced_job, namespace=api.settings.namespace)
    return delete_object(api, "Job", delete, name)
