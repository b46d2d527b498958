"""Webhook delivery to a real local receiver: signed, retried with backoff, refused by the SSRF guard."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import trustme

from sandq.gateway.ssrf import IPAddress, TargetPolicy, TargetRefused
from sandq.gateway.webhooks import Delivery, DeliveryState, Webhooks
from sandq.stopping import stop
from sandq.webhook_signature import verify
from tests.conftest import free_port
from tests.integration.gateway.conftest import Answer, Receiver, gateway_settings

MakeWebhooks = Callable[..., Webhooks]
RESULT = {"id": "e1", "status": "succeeded", "stdout": "1\n"}


@pytest.fixture
async def make_webhooks(aredis: aioredis.Redis, namespace: str) -> AsyncIterator[MakeWebhooks]:
    made: list[Webhooks] = []

    def make(
        policy: TargetPolicy | None = None, verify: ssl.SSLContext | bool = True, **settings: Any
    ) -> Webhooks:
        values = {"webhook_allow_hosts": ["127.0.0.1"], **settings}
        webhooks = Webhooks(aredis, gateway_settings(**values), namespace, policy=policy, verify=verify)
        made.append(webhooks)
        return webhooks

    yield make
    for webhooks in made:
        await webhooks.aclose()


async def settled(webhooks: Webhooks, delivery_id: str, tenant: str = "acme") -> Delivery:
    """Deliver due webhooks until ``delivery_id`` is no longer pending."""
    for _ in range(500):
        await webhooks.deliver_due()
        delivery = await webhooks.get(tenant, delivery_id)
        assert delivery is not None
        if delivery.state is not DeliveryState.PENDING:
            return delivery
        await asyncio.sleep(0.02)
    raise AssertionError(f"{delivery_id} still pending")


async def test_a_webhook_is_retried_after_a_500_and_both_attempts_verify(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([Answer(500)])
    webhooks = make_webhooks()
    secret = await webhooks.secrets.current("acme")
    await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "execution-e1")

    running = asyncio.create_task(webhooks.run())
    try:
        async with asyncio.timeout(10):
            while (delivery := await webhooks.get("acme", "execution-e1")) and delivery.state == "pending":
                await asyncio.sleep(0.02)
    finally:
        assert not await stop([running])

    assert delivery is not None and delivery.state is DeliveryState.DELIVERED
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (2, 200, None)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    assert len(receiver.received) == 2
    for request in receiver.received:
        payload = verify(secret, request.body, request.headers)
        assert payload["type"] == "execution.completed" and payload["data"] == RESULT
        assert request.headers["webhook-id"] == "execution-e1"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["host"] == f"127.0.0.1:{receiver.port}"


async def test_retries_stop_at_the_bound(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([Answer(503)] * 5)
    webhooks = make_webhooks(webhook_max_attempts=3)
    await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "d")

    delivery = await settled(webhooks, "d")

    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (DeliveryState.FAILED, 3, 503)
    assert delivery.last_error == "the receiver answered 503"
    assert len(receiver.received) == 3


async def test_a_client_error_is_not_retried(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([Answer(400)])
    webhooks = make_webhooks()
    await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "d")

    delivery = await settled(webhooks, "d")

    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (DeliveryState.FAILED, 1, 400)
    assert len(receiver.received) == 1


async def test_a_timeout_and_a_refused_connection_are_retried(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([Answer(200, delay=1.0)])
    webhooks = make_webhooks(webhook_read_timeout_seconds=0.3, webhook_max_attempts=2)
    await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "slow")
    closed_url = f"http://127.0.0.1:{free_port()}/"
    await webhooks.enqueue("acme", closed_url, "execution.completed", RESULT, "closed")

    slow, closed = await settled(webhooks, "slow"), await settled(webhooks, "closed")

    assert (slow.state, slow.attempts) == (DeliveryState.DELIVERED, 2)
    assert len(receiver.received) == 2
    assert (closed.state, closed.attempts) == (DeliveryState.FAILED, 2)
    assert closed.last_error is not None and closed.last_error.startswith("ConnectError")


async def test_a_redirect_to_a_private_address_is_refused_without_following(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([Answer(307, {"location": "https://10.0.0.1/steal"})])
    webhooks = make_webhooks()
    await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "d")

    delivery = await settled(webhooks, "d")

    assert (delivery.state, delivery.attempts) == (DeliveryState.REFUSED, 1)
    assert delivery.last_error == "10.0.0.1 is a private address"
    assert len(receiver.received) == 1


async def test_a_307_to_an_allowed_target_is_followed_and_a_302_is_not(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    moved = {"location": "/moved"}
    receiver = receiver_factory([Answer(307, moved), Answer(200), Answer(302, moved)])
    webhooks = make_webhooks()
    await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "d307")
    followed = await settled(webhooks, "d307")
    await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "d302")
    not_followed = await settled(webhooks, "d302")

    assert (followed.state, followed.attempts) == (DeliveryState.DELIVERED, 1), followed.last_error
    assert (not_followed.state, not_followed.last_status_code) == (DeliveryState.FAILED, 302)
    assert [r.path for r in receiver.received] == ["/hook", "/moved", "/hook"]
    assert receiver.received[0].body == receiver.received[1].body


def resolving(host: str, address: str) -> Callable[[str, int], Awaitable[list[IPAddress]]]:
    async def resolve(name: str, port: int) -> list[IPAddress]:
        assert name == host
        return [ipaddress.ip_address(address)]

    return resolve


@pytest.mark.parametrize(("cert_name", "state"), [("receiver.test", "delivered"), ("other.test", "failed")])
async def test_https_goes_to_the_checked_address_and_verifies_the_host_name(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver], cert_name: str, state: str
) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_name).configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    receiver = receiver_factory([], tls=server_tls)
    policy = TargetPolicy(["receiver.test"], resolver=resolving("receiver.test", "127.0.0.1"))
    webhooks = make_webhooks(policy=policy, verify=client_tls, webhook_max_attempts=1)
    await webhooks.enqueue("acme", receiver.url(host="receiver.test"), "execution.completed", RESULT, "d")

    delivery = await settled(webhooks, "d")

    assert delivery.state == state
    if state == "delivered":
        assert receiver.received[0].headers["host"] == f"receiver.test:{receiver.port}"
    else:
        assert receiver.received == []
        assert delivery.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in delivery.last_error


async def test_a_refused_url_is_refused_at_once_and_nothing_is_stored(
    make_webhooks: MakeWebhooks, aredis: aioredis.Redis, namespace: str
) -> None:
    webhooks = make_webhooks()

    for url in ("http://10.0.0.1/", "http://169.254.169.254/", "https://[::1]/"):
        with pytest.raises(TargetRefused):
            await webhooks.enqueue("acme", url, "execution.completed", RESULT, "d")

    assert [k async for k in aredis.scan_iter(match=f"sandq:{namespace}:*")] == []


async def test_a_delivery_is_queued_once_and_only_its_tenant_sees_it(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([])
    webhooks = make_webhooks()
    first = await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "d")
    again = await webhooks.enqueue("acme", receiver.url("/other"), "execution.completed", {"x": 1}, "d")

    delivered = await settled(webhooks, "d")

    assert again == first and delivered.state is DeliveryState.DELIVERED
    assert await webhooks.get("globex", "d") is None
    assert [r.path for r in receiver.received] == ["/hook"]


async def test_after_a_rotation_webhooks_verify_with_the_old_and_the_new_secret(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([])
    webhooks = make_webhooks()
    old = await webhooks.secrets.current("acme")
    new = await webhooks.secrets.rotate("acme")
    await webhooks.enqueue("acme", receiver.url(), "execution.completed", RESULT, "d")

    await settled(webhooks, "d")

    request = receiver.received[0]
    assert old != new == await webhooks.secrets.current("acme")
    assert verify(old, request.body, request.headers) == verify(new, request.body, request.headers)
    assert await webhooks.secrets.current("globex") not in (old, new)
    assert json.loads(request.body)["data"] == RESULT


async def test_the_old_secret_stops_signing_after_the_grace_period(make_webhooks: MakeWebhooks) -> None:
    webhooks = make_webhooks(webhook_secret_grace_seconds=0)
    await webhooks.secrets.rotate("acme")

    assert await webhooks.secrets.signing("acme") == [await webhooks.secrets.current("acme")]


async def test_a_delivery_whose_gateway_died_mid_attempt_comes_back_after_its_lease(
    make_webhooks: MakeWebhooks, receiver_factory: type[Receiver]
) -> None:
    receiver = receiver_factory([Answer(200, delay=0.5)])
    timing = {
        "webhook_connect_timeout_seconds": 0.5,
        "webhook_read_timeout_seconds": 0.5,
        "webhook_max_redirects": 0,
        "webhook_lease_seconds": 1.5,
    }
    dying, other = make_webhooks(**timing), make_webhooks(**timing)
    await dying.enqueue("acme", receiver.url(), "execution.completed", RESULT, "d")
    attempt = asyncio.create_task(dying.deliver_due())
    await asyncio.sleep(0.2)
    attempt.cancel()  # the gateway dies with the attempt under way

    assert await other.deliver_due() == 0  # leased: no second sender meanwhile
    await asyncio.sleep(1.5)
    delivery = await settled(other, "d")

    assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 1)
    assert len(receiver.received) == 2
    assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"] == "d"
