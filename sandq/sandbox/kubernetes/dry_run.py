"""The dry run: the manifests a kubernetes run would create, as YAML, without a cluster."""

from __future__ import annotations

from typing import Any

import yaml

from sandq.contract import ExecutionRequest
from sandq.sandbox.kubernetes.manifests import configmap_manifest, job_manifest
from sandq.settings import Settings

UID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
"""Stands for the Job's uid, which only the API server assigns."""


class _Dumper(yaml.SafeDumper):
    """Safe dumper that writes multi-line strings (the code) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and all(line == line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def manifests(request: ExecutionRequest, settings: Settings, execution_id: str) -> list[dict[str, Any]]:
    """The Job and the ConfigMap, in the order they are created."""
    return [
        job_manifest(request, settings, execution_id),
        configmap_manifest(request, settings, execution_id, UID_PLACEHOLDER),
    ]


def dry_run_yaml(request: ExecutionRequest, settings: Settings, execution_id: str) -> str:
    """The Job and ConfigMap of one execution as a multi-document YAML string."""
    return yaml.dump_all(
        manifests(request, settings, execution_id), Dumper=_Dumper, sort_keys=False,
        default_flow_style=False, allow_unicode=True,
    )
