"""The adapter works with the oldest google-adk that pyproject.toml allows.

``make check-adk-min`` runs this file with that release's own code first on the path (the lower
bound of the ``adk`` extra, installed without dependencies); the suite runs it with the locked
version. With the release before the bound (2.8, no ``exit_code``) it fails.
"""

from __future__ import annotations

from google.adk.code_executors.code_execution_utils import CodeExecutionResult

from sandq.adk_adapter import QueuedCodeExecutor
from sandq.adk_adapter.executor import to_code_execution_result
from sandq.contract import ExecutionResult, Status
from tests.conftest import free_port


def test_adapter_builds_adk_results_with_the_exit_code() -> None:
    executor = QueuedCodeExecutor(redis_url=f"redis://127.0.0.1:{free_port()}/0", mem_limit="1Gi")
    assert executor.client is not None
    executor.client.close()
    failed = ExecutionResult(id="x", status=Status.FAILED, exit_code=3, stderr="boom\n")
    succeeded = ExecutionResult(id="y", status=Status.SUCCEEDED, exit_code=0, stdout="42\n")

    adk_failed = to_code_execution_result(failed, executor.timeout_seconds, executor.mem_limit)
    adk_succeeded = to_code_execution_result(succeeded, executor.timeout_seconds, executor.mem_limit)

    assert isinstance(adk_failed, CodeExecutionResult)
    assert (adk_failed.exit_code, adk_failed.stderr) == (3, "boom\n")
    assert (adk_succeeded.exit_code, adk_succeeded.stdout, adk_succeeded.stderr) == (0, "42\n", "")
