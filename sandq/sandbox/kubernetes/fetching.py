"""Reading the sandbox's output: one log read, capped with ``limit_bytes``."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from sandq.contract import ExecutionRequest
from sandq.sandbox.kubernetes.api import KubeApi
from sandq.sandbox.kubernetes.manifests import CONTAINER
from sandq.sandbox.protocol import report_budget
from sandq.settings import Settings


def frame_cap(request: ExecutionRequest, settings: Settings) -> int:
    """Most bytes a well-formed report can take: both streams and the files in base64, at most the
    runner's budget (under the log's rotation size), and slack for the frame and stray output."""
    payload = (2 * request.max_output_bytes + settings.max_output_files_bytes) * 4 // 3
    return min(payload, report_budget(settings)) + 64 * 1024


def read_logs(api: KubeApi, pod_name: str, limit_bytes: int) -> bytes | None:
    """The runner container's log, at most ``limit_bytes``; None if the pod is gone.

    Infrastructure faults are retried (``KubeApi.call``), then raised as ``InfrastructureFault``.
    """
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
