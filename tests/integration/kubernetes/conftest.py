"""Fixtures for the Kubernetes backend: a fresh stand-in API server with a runsc-backed cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s_harness.env import Env, kubernetes_env


@pytest.fixture
def env() -> Iterator[Env]:
    with kubernetes_env() as environment:
        yield environment
