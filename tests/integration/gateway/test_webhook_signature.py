"""The receivers' verification helper: round trip, tampering, replay, rotation, Standard Webhooks."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from sandq.webhook_signature import WebhookVerificationError, signed_headers, verify

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
OTHER = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
BODY = json.dumps({"type": "execution.completed", "data": {"id": "abc", "status": "succeeded"}}).encode()


def test_a_signed_body_verifies_and_its_payload_comes_back() -> None:
    headers = signed_headers([SECRET], "execution-abc", BODY)

    assert verify(SECRET, BODY, headers) == json.loads(BODY)
    assert verify(SECRET, BODY.decode(), {k.upper(): v for k, v in headers.items()})["data"]["id"] == "abc"


@pytest.mark.parametrize(
    ("body", "change", "message"),
    [
        (BODY.replace(b"succeeded", b"failed"), {}, "no signature matches"),
        (BODY, {"webhook-id": "execution-other"}, "no signature matches"),
        (BODY, {"webhook-timestamp": str(int(time.time()) - 900)}, "from now"),
        (BODY, {"webhook-timestamp": str(int(time.time()) + 900)}, "from now"),
        (BODY, {"webhook-timestamp": "soon"}, "not an integer"),
        (BODY, {"webhook-signature": ""}, "missing"),
        (BODY, {"webhook-signature": "v1,\u00e9\u00e9"}, "no signature matches"),
    ],
)
def test_a_changed_webhook_is_refused(body: bytes, change: dict[str, str], message: str) -> None:
    headers = {**signed_headers([SECRET], "execution-abc", BODY), **change}

    with pytest.raises(WebhookVerificationError, match=message):
        verify(SECRET, body, headers)


def test_another_secret_does_not_verify() -> None:
    with pytest.raises(WebhookVerificationError):
        verify(OTHER, BODY, signed_headers([SECRET], "execution-abc", BODY))


def test_while_rotating_either_secret_verifies() -> None:
    headers = signed_headers([OTHER, SECRET], "execution-abc", BODY)

    assert verify(SECRET, BODY, headers) == verify(OTHER, BODY, headers)


def test_the_tolerance_is_the_receivers_choice() -> None:
    headers = signed_headers([SECRET], "execution-abc", BODY, timestamp=int(time.time()) - 3600)

    assert verify(SECRET, BODY, headers, tolerance_seconds=7200)["type"] == "execution.completed"


def test_a_secret_that_is_not_base64_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="base64"):
        verify("whsec_not*base64", BODY, signed_headers([SECRET], "x", BODY))


def test_the_standard_webhooks_library_and_ours_accept_each_others_signatures() -> None:
    ours = signed_headers([SECRET], "execution-abc", BODY)
    reference = standardwebhooks.Webhook(SECRET)
    theirs = {
        "webhook-id": "execution-abc",
        "webhook-timestamp": ours["webhook-timestamp"],
        "webhook-signature": reference.sign(
            "execution-abc", datetime.fromtimestamp(int(ours["webhook-timestamp"]), UTC), BODY.decode()
        ),
    }

    assert reference.verify(BODY, ours) == json.loads(BODY)
    assert verify(SECRET, BODY, theirs) == json.loads(BODY)
    assert theirs["webhook-signature"] == ours["webhook-signature"]
