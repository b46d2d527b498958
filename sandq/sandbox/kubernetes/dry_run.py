"""The dry run: the manifests a kubernetes run would create, as YAML, without a cluster."""

from __future__ import annotations

from typing import Any

import yaml

from sandq.contract import ExecutionRequest, now
from sandq.sandbox.kubernetes.manifests import (
    claim_manifest,
    configmap_manifest,
    job_manifest,
    runs_warm,
    sandbox_template_manifest,
)
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
    """The Job and the ConfigMap, in the order they are created; on the warm path, the
    SandboxTemplate its sandbox comes from (deployed once, not created per execution) and the
    SandboxClaim."""
    if runs_warm(request, settings):
        return [sandbox_template_manifest(settings), claim_manifest(request, settings, execution_id, now())]
    return [
        job_manifest(request, settings, execution_id),
        configmap_manifest(request, settings, execution_id, UID_PLACEHOLDER),
    ]


def dry_run_yaml(request: ExecutionRequest, settings: Settings, execution_id: str) -> str:
    """What one execution would create (``manifests``) as a multi-document YAML string."""
    return yaml.dump_all(
        manifests(request, settings, execution_id), Dumper=_Dumper, sort_keys=False,
        default_flow_style=False, allow_unicode=True,
    )
