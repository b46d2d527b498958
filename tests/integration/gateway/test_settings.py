"""Gateway settings: a strong server secret, a readable allow-list, per-purpose subkeys."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sandq.gateway.settings import GatewaySettings
from tests.integration.gateway.conftest import gateway_settings


def test_the_server_secret_is_required_and_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDQ_GATEWAY_SECRET", raising=False)

    with pytest.raises(ValidationError, match="secret"):
        GatewaySettings()
    with pytest.raises(ValidationError, match="at least 32 characters"):
        gateway_settings(secret="short")


def test_settings_come_from_the_environment_and_the_secret_is_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SANDQ_GATEWAY_SECRET", "s" * 40)
    monkeypatch.setenv("SANDQ_GATEWAY_WEBHOOK_ALLOW_HOSTS", '["Receiver.Internal.", "10.0.0.0/8"]')

    settings = GatewaySettings()

    assert settings.webhook_allow_hosts == ["receiver.internal", "10.0.0.0/8"]
    assert "s" * 40 not in repr(settings)


@pytest.mark.parametrize("entry", ["http://x.example", "x.example:8080", "", "a b"])
def test_an_allow_list_entry_that_is_not_a_host_is_refused(entry: str) -> None:
    with pytest.raises(ValidationError, match="webhook_allow_hosts"):
        gateway_settings(webhook_allow_hosts=[entry])


def test_subkeys_differ_by_purpose_and_by_secret() -> None:
    one, other = gateway_settings(), gateway_settings()

    assert one.subkey("api-key") != one.subkey("webhook-secret")
    assert one.subkey("api-key") != other.subkey("api-key")
    assert one.subkey("api-key") == one.subkey("api-key")


def test_a_webhook_lease_shorter_than_an_attempt_is_refused() -> None:
    with pytest.raises(ValidationError, match="webhook_lease_seconds must exceed the longest attempt"):
        gateway_settings(webhook_lease_seconds=5, webhook_read_timeout_seconds=10)
