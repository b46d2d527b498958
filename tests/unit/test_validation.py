"""Request validation: the contract's checks, then this deployment's maximums, naming the field."""

from __future__ import annotations

import pytest

from sandq.contract import ExecutionRequest
from sandq.settings import Settings
from sandq.validation import RequestRejected, limit_violation, validate_request

SETTINGS = Settings(max_timeout_seconds=600, max_cpu_limit="1", max_mem_limit="1Gi")


@pytest.mark.parametrize(("fields", "named"), [
    ({"timeout_seconds": 601}, "timeout_seconds: 601 exceeds the maximum 600"),
    ({"cpu_limit": "1500m"}, "cpu_limit: 1500m exceeds the maximum 1"),
    ({"mem_limit": "2Gi"}, "mem_limit: 2Gi exceeds the maximum 1Gi"),
])
def test_a_limit_above_the_deployments_maximum_is_named(fields: dict[str, object], named: str) -> None:
    request = ExecutionRequest(code="pass", **fields)  # type: ignore[arg-type]
    assert limit_violation(request, SETTINGS) == named
    with pytest.raises(RequestRejected, match=named):
        validate_request(request, SETTINGS)


def test_limits_at_the_maximum_are_accepted() -> None:
    request = ExecutionRequest(code="pass", timeout_seconds=600, cpu_limit="1", mem_limit="1Gi")
    assert limit_violation(request, SETTINGS) is None
    assert validate_request(request, SETTINGS) is request


def test_a_raw_request_is_checked_against_the_contract_with_every_field_named() -> None:
    with pytest.raises(RequestRejected) as refused:
        validate_request({"code": "", "timeout_seconds": 0, "colour": "red"}, SETTINGS)
    message = str(refused.value)
    assert "code:" in message and "timeout_seconds:" in message and "colour:" in message
    assert "Value error," not in message


def test_a_valid_raw_request_becomes_the_model() -> None:
    request = validate_request({"code": "print(1)", "tenant": "acme"}, SETTINGS)
    assert isinstance(request, ExecutionRequest) and request.tenant == "acme"
