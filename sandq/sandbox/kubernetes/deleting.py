"""Deleting a Job; its pods and ConfigMap go with it (background propagation, ownerReferences)."""

from __future__ import annotations

import logging

from kubernetes.client.exceptions import ApiException

from sandq.sandbox.backend import InfrastructureFault
from sandq.sandbox.kubernetes.api import KubeApi

log = logging.getLogger(__name__)

NOT_FOUND = 404


def delete_job(api: KubeApi, name: str) -> bool:
    """Delete Job ``name`` with background propagation; False if it was already gone.

    A failure is logged, not raised: the janitor removes what is left.
    """
    try:
        api.call(
            "delete Job", api.batch.delete_namespaced_job, name, api.settings.namespace,
            propagation_policy="Background",
        )
    except ApiException as error:
        if error.status == NOT_FOUND:
            return False
        log.warning("could not delete Job %s: HTTP %s %s", name, error.status, error.reason)
        return False
    except InfrastructureFault as error:
        log.warning("could not delete Job %s: %s; the janitor will", name, error)
        return False
    return True
