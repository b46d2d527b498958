"""The one interface every sandbox backend implements, and the registry that picks one by name.

Called by the worker (``sandq.worker.task``): one ``Backend`` per worker process runs each
request in a fresh sandbox and returns a ``SandboxReport``; the backends (``gvisor``,
``kubernetes``, ``simulated``) are peers below this module.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from sandq.broker.routing import Priority
from sandq.contract import ExecutionRequest, SandboxReport
from sandq.settings import Settings

OnResult = Callable[[str, SandboxReport], None]
"""Called with each execution's id and report as it ends (``Backend.run_batch``)."""
OnOutput = Callable[[str, bytes], None]
"""Called with "stdout" or "stderr" and the bytes the program wrote there, as they are read
(``Backend.run``): the program's own output only, never the runner's report."""

BACKENDS: dict[str, str] = {
    "gvisor": "sandq.sandbox.gvisor.backend:GVisorBackend",
    "kubernetes": "sandq.sandbox.kubernetes.backend:KubernetesBackend",
    "simulated": "sandq.sandbox.simulated:SimulatedLatencyBackend",
}
"""Each backend's class, imported only when chosen (the Kubernetes client is optional to load)."""


class InfrastructureFault(Exception):
    """The sandbox system failed (not the user's code) before the code could have run: retry it."""


class Backend(ABC):
    """Runs one request in one fresh sandbox, and cleans up after it."""

    name: ClassVar[str]
    runs_batches: ClassVar[bool] = False
    """Whether ``run_batch`` runs many executions as one cluster object (Kubernetes Indexed Jobs).
    Otherwise the worker sends each execution of a batch on as a message of its own, so that the
    executions run in parallel and hold their in-flight slots only while they run."""
    streams_output: ClassVar[bool] = False
    """Whether ``run`` calls ``on_output`` while the code runs (else the worker passes none)."""

    @abstractmethod
    def run(
        self, execution_id: str, request: ExecutionRequest, on_output: OnOutput | None = None,
        *, priority: Priority = "interactive",
    ) -> SandboxReport:
        """Run ``request`` to completion; raise ``InfrastructureFault`` on system failure.

        ``on_output(stream, data)``, if given, receives the program's output as it is read.
        ``priority`` is the kind of work the execution was submitted as; a backend with
        capacity kept for interactive work (the local warm pool) uses it.
        """

    def run_batch(self, items: list[tuple[str, ExecutionRequest]], on_result: OnResult) -> None:
        """Run many requests together; ``on_result(id, report)`` as each ends (``runs_batches`` only)."""
        raise NotImplementedError(f"the {self.name} backend runs each execution on its own")

    def cancel(self, execution_id: str) -> bool:
        """Stop a running execution; True if one was found."""
        return False

    def sweep(self) -> None:
        """Remove sandboxes left behind by worker processes that are gone."""

    def start(self) -> None:
        """Begin background work (warm pools, watches); called once per worker process."""

    def close(self) -> None:
        """Release everything the backend holds."""


def make_backend(settings: Settings) -> Backend:
    """The backend ``settings.backend`` names, not yet started."""
    module, _, cls = BACKENDS[settings.backend].partition(":")
    backend: Backend = getattr(importlib.import_module(module), cls)(settings)
    return backend
