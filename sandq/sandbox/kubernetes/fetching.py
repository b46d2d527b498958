"""Reading the sandbox's output: one log read, capped with ``limit_bytes``."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from sandq.contract import ExecutionRequest
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.manifests import CONTAINER
from sandq.settings import Settings


def frame_cap(request: ExecutionRequest, settings: Settings) -> int:
    """Most bytes a well-formed result frame can take (both streams, files, base64, slack)."""
    payload = 2 * request.max_output_bytes + settings.max_output_files_bytes
    return payload * 4 // 3 + 64 * 1024


def read_logs(api: KubeApi, pod_name: str, limit_bytes: int) -> bytes | None:
    """The runner container's log, at most ``limit_bytes``; None if the pod is gone."""
    try:
        response = api.call(
            "read pod log", api.core.read_namespaced_pod_log, pod_name, api.settings.namespace,
            container=CONTAINER, limit_bytes=limit_bytes, _preload_content=False,
        )
    except ApiException as error:
        if error.status in (400, 404):
            return None
        raise
    try:
        return bytes(response.read(limit_bytes))
    finally:
        response.release_conn()
