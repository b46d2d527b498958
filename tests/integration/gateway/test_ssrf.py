"""Webhook targets: refusals checked by the policy itself, without sending traffic to those addresses."""

from __future__ import annotations

import ipaddress
import re

import pytest

from sandq.gateway.ssrf import IPAddress, Resolver, TargetPolicy, TargetRefused, refusal


def resolving(table: dict[str, list[str]]) -> Resolver:
    """A resolver answering from ``table`` (a name outside it fails the test: no real look-up)."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in table[host]]

    return resolve


async def no_lookup(host: str, port: int) -> list[IPAddress]:
    raise AssertionError(f"{host} should be refused before any DNS look-up")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "use https"),
        ("http://169.254.169.254/latest/meta-data/", "use https"),
        ("http://10.0.0.1/", "use https"),
        ("http://[::1]/", "use https"),
        ("http://example.com/hook", "use https"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://10.0.0.1/", "private"),
        ("https://[::1]/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "127.0.0.1 is a loopback address (inside ::ffff:7f00:1)"),
        ("https://[::ffff:a9fe:a9fe]/", "metadata"),
        ("https://[2002:a00:1::1]/", "10.0.0.1 is a private address"),
        ("https://[64:ff9b::a9fe:a9fe]/", "metadata"),
        ("https://[fd00:ec2::254]/", "metadata"),
        ("https://[fe80::1]/", "link-local"),
        ("https://224.0.0.1/", "multicast"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://100.64.0.1/", "not a public address"),
        ("https://240.0.0.1/", "reserved"),
        ("ftp://example.com/", "https://HOST"),
        ("https:///nohost", "https://HOST"),
    ],
)
async def test_refused_before_any_lookup(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=re.escape(reason)):
        await TargetPolicy([], resolver=no_lookup).resolve(url)


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["10.1.2.3"], "private"),
        (["93.184.215.14", "192.168.1.5"], "192.168.1.5 is a private address"),
        (["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:10.0.0.1"], "10.0.0.1"),
        (["169.254.169.254"], "metadata"),
    ],
)
async def test_a_name_resolving_to_a_refused_address_is_refused(addresses: list[str], reason: str) -> None:
    policy = TargetPolicy([], resolver=resolving({"hooks.example.com": addresses}))

    with pytest.raises(TargetRefused, match=rf"hooks\.example\.com resolves to .*{re.escape(reason)}"):
        await policy.resolve("https://hooks.example.com/in")


async def test_localhost_is_refused_through_the_system_resolver() -> None:
    with pytest.raises(TargetRefused, match=r"localhost resolves to .*loopback"):
        await TargetPolicy([]).resolve("https://localhost:9/hook")


async def test_a_public_name_is_accepted_and_pinned_to_its_checked_address() -> None:
    policy = TargetPolicy([], resolver=resolving({"hooks.example.com": ["93.184.215.14"]}))

    target = await policy.resolve("https://hooks.example.com:8443/in?x=1")

    assert target.addresses == (ipaddress.ip_address("93.184.215.14"),)
    assert str(target.pinned_url(target.addresses[0])) == "https://93.184.215.14:8443/in?x=1"
    assert (target.host, target.host_header) == ("hooks.example.com", "hooks.example.com:8443")


async def test_the_allow_list_opens_http_and_private_addresses_for_the_hosts_it_names() -> None:
    policy = TargetPolicy(
        ["127.0.0.1", "10.0.0.0/8", "receiver.internal"],
        resolver=resolving({"receiver.internal": ["192.168.7.7"], "other.internal": ["192.168.7.8"]}),
    )

    assert (await policy.resolve("http://127.0.0.1:8080/hook")).addresses[0].is_loopback
    assert (await policy.resolve("http://10.9.9.9/hook")).addresses[0].is_private
    assert (await policy.resolve("http://receiver.internal/hook")).host == "receiver.internal"
    with pytest.raises(TargetRefused, match="allow-list"):
        await policy.resolve("http://other.internal/hook")
    with pytest.raises(TargetRefused, match=re.escape("192.168.7.8 is a private address")):
        await policy.resolve("https://other.internal/hook")
    with pytest.raises(TargetRefused, match="allow-list"):
        await policy.resolve("http://[::1]/hook")


async def test_a_metadata_address_needs_an_entry_of_its_own() -> None:
    wide = TargetPolicy(["169.254.0.0/16"], resolver=no_lookup)
    exact = TargetPolicy(["169.254.169.254"], resolver=no_lookup)

    with pytest.raises(TargetRefused, match="metadata"):
        wide.check_url("http://169.254.169.254/")
    assert wide.check_url("http://169.254.1.1/").host == "169.254.1.1"
    assert exact.check_url("http://169.254.169.254/").host == "169.254.169.254"


def test_public_addresses_have_no_refusal() -> None:
    public = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1"]

    assert [refusal(ipaddress.ip_address(a)) for a in public] == [None] * 4
