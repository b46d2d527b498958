"""The wire contract rejects every invalid request, naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sandq.contract import MAX_CODE_BYTES, ExecutionRequest, ExecutionResult, File, Status, check_tenant
from sandq.settings import Settings
from sandq.validation import RequestRejected, validate_request

INVALID = [
    ({"code": ""}, "code"),
    ({"code": "   \n"}, "code"),
    ({"code": "x" * (MAX_CODE_BYTES + 1)}, "code"),
    ({"code": "print(1)", "language": "javascript"}, "language"),
    ({"code": "print(1)", "timeout_seconds": 0}, "timeout_seconds"),
    ({"code": "print(1)", "timeout_seconds": -5}, "timeout_seconds"),
    ({"code": "print(1)", "timeout_seconds": 3601}, "timeout_seconds"),
    ({"code": "print(1)", "cpu_limit": "abc"}, "cpu_limit"),
    ({"code": "print(1)", "mem_limit": "-1Gi"}, "mem_limit"),
    ({"code": "print(1)", "mem_requested": "1Gi", "mem_limit": "512Mi"}, "mem_requested"),
    ({"code": "print(1)", "tenant": "Not A Slug"}, "tenant"),
    ({"code": "print(1)", "max_output_bytes": 10}, "max_output_bytes"),
    ({"code": "print(1)", "input_files": [{"name": "../x", "content": ""}]}, "input_files.0.name"),
    ({"code": "print(1)", "input_files": [{"name": "/etc/passwd", "content": ""}]}, "input_files.0.name"),
    ({"code": "print(1)", "input_files": [{"name": "a/./b", "content": ""}]}, "input_files.0.name"),
    (
        {"code": "print(1)", "input_files": [{"name": "a", "content": ""}, {"name": "a", "content": ""}]},
        "input_files",
    ),
    (
        {"code": "print(1)", "input_files": [{"name": "big", "content": "A" * (1024 * 1024 + 4)}]},
        "input_files",
    ),
    ({"code": "print(1)", "unknown_field": 1}, "unknown_field"),
    (  # each within its cap, together too much for the one 1 MiB ConfigMap that carries them to a pod
        {"code": "#" + "x" * (MAX_CODE_BYTES - 1),
         "input_files": [{"name": "big", "content": "A" * (600 * 1024 * 4 // 3)}]},
        "input_files",
    ),
]


@pytest.mark.parametrize(("raw", "field"), INVALID)
def test_invalid_request_names_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(RequestRejected) as caught:
        validate_request(raw, Settings())
    assert str(caught.value).startswith(f"{field}:"), str(caught.value)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"code": "print(1)", "mem_limit": "64Gi"}, "mem_limit"),
        ({"code": "print(1)", "cpu_limit": "16"}, "cpu_limit"),
        ({"code": "print(1)", "timeout_seconds": 600}, "timeout_seconds"),
    ],
)
def test_limits_above_the_deployment_maximum_are_rejected(raw: dict[str, object], field: str) -> None:
    settings = Settings(max_mem_limit="1Gi", max_cpu_limit="2", max_timeout_seconds=300)
    with pytest.raises(RequestRejected, match=f"^{field}: "):
        validate_request(raw, settings)


def test_defaults_are_those_of_gke_code_executor() -> None:
    request = ExecutionRequest(code="print(1)")
    assert (request.cpu_requested, request.mem_requested, request.cpu_limit, request.mem_limit) == (
        "200m",
        "256Mi",
        "500m",
        "512Mi",
    )
    assert request.timeout_seconds == 300
    assert request.max_output_bytes == 1024 * 1024


def test_request_and_result_round_trip_as_json_with_bytes() -> None:
    request = ExecutionRequest(code="print(1)", input_files=[File(name="d/x.bin", content=b"\x00\xff")])
    again = ExecutionRequest.model_validate_json(request.model_dump_json())
    assert again == request
    result = ExecutionResult(
        id="x", status=Status.SUCCEEDED, output_files=[File(name="o.png", content=b"\x89PNG")]
    )
    assert ExecutionResult.model_validate_json(result.model_dump_json()).output_files[0].content == b"\x89PNG"


def test_status_values_are_the_documented_ones() -> None:
    assert [s.value for s in Status] == [
        "succeeded",
        "failed",
        "timed_out",
        "oom_killed",
        "output_limit_exceeded",
        "rejected",
        "infrastructure_error",
        "cancelled",
    ]


def test_file_name_must_be_relative() -> None:
    with pytest.raises(ValidationError):
        File(name="/abs", content=b"")


def test_code_and_inputs_fit_one_configmap_with_the_runner() -> None:
    """The largest request accepted still fits a ConfigMap (1 MiB of data) with sandq's own files."""
    from sandq.contract import MAX_SANDBOX_PAYLOAD_BYTES
    from sandq.sandbox.kubernetes.manifests import configmap_manifest
    from tests.k8s_harness.standin import CONFIGMAP_MAX_BYTES, configmap_size

    code = "#" + "x" * (MAX_CODE_BYTES - 1)
    names = sum(len(f"d/file-{i:03}.bin") + 64 for i in range(200))
    size, rest = divmod(MAX_SANDBOX_PAYLOAD_BYTES - MAX_CODE_BYTES - names, 200)
    files = [File(name=f"d/file-{i:03}.bin", content=bytes(size + (0 if i else rest))) for i in range(200)]
    request = validate_request({"code": code, "input_files": [f.model_dump(mode="json") for f in files]},
                               Settings())
    assert configmap_size(configmap_manifest(request, Settings(), "e", "uid")) <= CONFIGMAP_MAX_BYTES
    one_more = [File(name=files[0].name, content=files[0].content + b"x"), *files[1:]]
    with pytest.raises(RequestRejected, match="input_files"):
        validate_request({"code": code, "input_files": [f.model_dump(mode="json") for f in one_more]},
                         Settings())

def test_the_wire_carries_the_version_2_fields_only_when_set() -> None:
    """A worker of contract version 1 (no such fields, extra fields forbidden) takes every other request."""
    plain = ExecutionRequest(code="print(1)")
    streaming = ExecutionRequest(code="print(1)", stream_output=True)
    warm = ExecutionRequest(code="print(1)", placement="warm")
    assert "stream_output" not in plain.wire() and "placement" not in plain.wire()
    assert streaming.wire()["stream_output"] is True and "placement" not in streaming.wire()
    assert warm.wire()["placement"] == "warm" and "stream_output" not in warm.wire()
    for request in (plain, streaming, warm):
        assert ExecutionRequest.model_validate(request.wire()) == request


def test_check_tenant_is_the_contracts_own() -> None:
    assert check_tenant("acme-2") == "acme-2"
    for bad in ("Acme", "-acme", "a" * 64, "", "a_b"):
        with pytest.raises(ValueError, match="slug"):
            check_tenant(bad)
