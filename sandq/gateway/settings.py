"""The gateway's settings, read from ``SANDQ_GATEWAY_`` environment variables."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_CHARS = 32


class GatewaySettings(BaseSettings):
    """Gateway configuration. Every field maps to ``SANDQ_GATEWAY_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="SANDQ_GATEWAY_", extra="ignore")

    secret: SecretStr = Field(
        description=(
            "Server secret (32+ random characters, e.g. `openssl rand -hex 32`): API keys are stored as"
            " its HMAC and tenants' webhook secrets derive from it. Changing it revokes every key."
        ),
    )
    poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How often each gateway looks for ended executions with a callback and advances batches.",
    )
    batch_max_requests: int = Field(default=1000, ge=1, description="Most requests in one batch.")
    redis_max_connections: int = Field(
        default=1000,
        ge=8,
        description="Redis connections of one gateway; each open event stream holds one while it waits.",
    )
    rate_limit: str = Field(
        default="20/second;600/minute",
        description="Requests per API key, in the notation of the `limits` library ('N/second;M/minute').",
    )
    webhook_allow_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Webhook hosts that may use http and resolve to private addresses (JSON list): host names,"
            " IP addresses or CIDR networks. A cloud metadata address needs its own entry."
        ),
    )
    webhook_connect_timeout_seconds: float = Field(default=3, gt=0, description="Webhook connect timeout.")
    webhook_read_timeout_seconds: float = Field(
        default=10, gt=0, description="Webhook timeout for sending the body and reading the answer."
    )
    webhook_max_attempts: int = Field(default=8, ge=1, description="Attempts of one webhook before it fails.")
    webhook_backoff_seconds: float = Field(
        default=2, gt=0, description="Delay before the first webhook retry (doubles each time, with jitter)."
    )
    webhook_backoff_max_seconds: float = Field(
        default=600, gt=0, description="Longest delay between webhook retries."
    )
    webhook_max_redirects: int = Field(
        default=3, ge=0, description="307/308 redirects a webhook follows (each target checked again)."
    )
    webhook_delivery_ttl_seconds: int = Field(
        default=7 * 86400, ge=60, description="How long a webhook's delivery state is kept."
    )
    webhook_secret_grace_seconds: int = Field(
        default=86400,
        ge=0,
        description="After a rotation, how long webhooks are signed with the old secret too.",
    )
    webhook_lease_seconds: float = Field(
        default=60, gt=0, description="A webhook attempt whose gateway died is tried again after this long."
    )
    webhook_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often each gateway looks for due webhooks."
    )

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"the server secret must have at least {MIN_SECRET_CHARS} characters")
        return secret

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, spec: str) -> str:
        parse_many(spec)
        return spec

    @field_validator("webhook_allow_hosts")
    @classmethod
    def _allow_hosts(cls, entries: list[str]) -> list[str]:
        checked = []
        for entry in entries:
            name = entry.strip().lower().rstrip(".")
            try:
                ipaddress.ip_network(name, strict=False)
            except ValueError:
                if not name or any(c in name for c in "/:@?#[] "):
                    raise ValueError(f"{entry!r} is not a host name, an IP address or a network") from None
            checked.append(name)
        return checked

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> GatewaySettings:
        attempt = self.webhook_attempt_seconds
        if self.webhook_lease_seconds <= attempt:
            raise ValueError(
                f"webhook_lease_seconds must exceed the longest attempt ({attempt:g} s: connect and read"
                " timeouts for each redirect), or another gateway would send the webhook again meanwhile"
            )
        return self

    @property
    def webhook_hop_seconds(self) -> float:
        """The longest one request of a webhook attempt may take (connecting, sending, answering)."""
        return self.webhook_connect_timeout_seconds + self.webhook_read_timeout_seconds

    @property
    def webhook_attempt_seconds(self) -> float:
        """The longest one webhook attempt may take, following every redirect it may."""
        return self.webhook_hop_seconds * (self.webhook_max_redirects + 1)

    def subkey(self, purpose: str) -> bytes:
        """A key for one ``purpose``, derived from ``secret`` (keys of different uses never coincide)."""
        secret = self.secret.get_secret_value().encode()
        return hmac.new(secret, f"sandq/{purpose}".encode(), hashlib.sha256).digest()
