"""Choose the sandbox backend named in the settings."""

from __future__ import annotations

from sandq.settings import Settings
from sandq.worker.backend import Backend


def make_backend(settings: Settings) -> Backend:
    """The backend ``settings.backend`` names, ready to run requests."""
    if settings.backend == "kubernetes":
        from sandq.worker.kubernetes.backend import KubernetesBackend  # noqa: PLC0415 (optional)

        return KubernetesBackend(settings)
    if settings.backend == "simulated":
        from sandq.worker.simulated import SimulatedLatencyBackend  # noqa: PLC0415 (benchmarks only)

        return SimulatedLatencyBackend(settings)
    from sandq.worker.gvisor import GVisorBackend  # noqa: PLC0415

    return GVisorBackend(settings)
