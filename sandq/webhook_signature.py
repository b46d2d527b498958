"""Sign and verify sandq's webhooks (the Standard Webhooks scheme), with the standard library only.

A webhook carries three headers: ``webhook-id`` (the idempotency key: the same for every retry of
one delivery), ``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256>`` entries separated by spaces; two while a secret is being rotated).
The HMAC covers ``<id>.<timestamp>.<body>`` with the tenant's secret (``whsec_<base64>``).

A receiver calls ``verify`` on the raw body, before parsing it, and drops ids it has already seen.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix of every secret)
DEFAULT_TOLERANCE_SECONDS = 300.0


class WebhookVerificationError(ValueError):
    """The webhook is not authentic, or too old or too new to accept."""


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def sign(secret: str, message_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``v1,<base64>`` signature of one delivery attempt."""
    signed = f"{message_id}.{timestamp}.".encode() + _as_bytes(body)
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secrets: Sequence[str], message_id: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """The three webhook headers, signed with each of ``secrets`` (current first)."""
    at = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(at),
        SIGNATURE_HEADER: " ".join(sign(secret, message_id, at, body) for secret in secrets),
    }


def verify(
    secret: str,
    body: bytes | str,
    headers: Mapping[str, str],
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> Any:
    """Check a received webhook and return its JSON payload.

    ``body`` is the raw request body; ``headers`` the request headers (any letter case).
    Raises ``WebhookVerificationError`` if a header is missing, the timestamp is further than
    ``tolerance_seconds`` from now (a replay), or no ``v1`` signature matches ``secret``.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get(ID_HEADER)
    stamp = lowered.get(TIMESTAMP_HEADER)
    signatures = lowered.get(SIGNATURE_HEADER)
    if not (message_id and stamp and signatures):
        raise WebhookVerificationError(
            f"missing one of the headers {ID_HEADER}, {TIMESTAMP_HEADER}, {SIGNATURE_HEADER}"
        )
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not an integer") from None
    if abs(time.time() - timestamp) > tolerance_seconds:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is more than {tolerance_seconds:g} s from now")
    expected = sign(secret, message_id, timestamp, body).encode("ascii")
    offered = (candidate.encode("utf-8", "replace") for candidate in signatures.split())
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise WebhookVerificationError("no signature matches the secret")
    return json.loads(_as_bytes(body))
