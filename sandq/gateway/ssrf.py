"""Which webhook URLs the gateway may call: a guard against server-side request forgery.

Only ``https``, unless the allow-list names the host. The host is resolved once, every address
is checked (loopback, link-local, private, shared, multicast, reserved, unspecified and cloud
metadata addresses are refused, also when wrapped in IPv6: IPv4-mapped, 6to4, Teredo, NAT64), and
the connection then goes to a checked address (``Target.pinned_url``), so a second DNS answer
cannot redirect it (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetRefused(Exception):
    """The gateway will not call this URL; the message says why."""


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the system resolver gives for ``host`` (without IPv6 scope ids)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why a connection to ``address`` is refused, or None if it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None and (reason := refusal(inner)):
            return f"{reason} (inside {address})"
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((f"{address} is {reason}" for hit, reason in checks if hit), None)


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the checked addresses of its host."""

    url: httpx.URL
    addresses: tuple[IPAddress, ...]

    @property
    def host(self) -> str:
        """The host as sent in ``Host`` and TLS SNI (IDNA-encoded)."""
        return self.url.raw_host.decode("ascii")

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the host, and the port unless it is the scheme's default."""
        return self.url.netloc.decode("ascii")

    def pinned_url(self, address: IPAddress) -> httpx.URL:
        """``url`` with its host replaced by ``address`` (send it with ``Host`` and SNI set to ``host``)."""
        return self.url.copy_with(host=str(address))


class TargetPolicy:
    """The allow-list (host names, IP addresses, CIDR networks) and the checks of a webhook URL."""

    def __init__(self, allow: Sequence[str] = (), resolver: Resolver = system_resolver) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.lower().rstrip("."))
        self.resolver = resolver

    def _names_host(self, host: str) -> bool:
        """True if the allow-list names ``host`` (an address inside a listed network counts)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host.lower().rstrip(".") in self.names
        return any(address in network for network in self.networks)

    def _allows(self, host: str, address: IPAddress) -> bool:
        """True if the allow-list lets ``host`` reach ``address`` although it is not public."""
        if host.lower().rstrip(".") in self.names:
            return True
        if address in METADATA_ADDRESSES:  # only an entry of exactly this address opens it
            return any(n.num_addresses == 1 and address in n for n in self.networks)
        return any(address in network for network in self.networks)

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """``url`` parsed, if it is acceptable as far as can be told without DNS; else ``TargetRefused``."""
        return self._check(url)[0]

    def _check(self, url: str | httpx.URL) -> tuple[httpx.URL, IPAddress | None]:
        """``url`` parsed, and its host if that is an IP address."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise TargetRefused(f"not a valid URL: {error}") from None
        if parsed.scheme not in _DEFAULT_PORTS or not parsed.raw_host:
            raise TargetRefused("a webhook URL must be https://HOST/...")
        host = parsed.raw_host.decode("ascii")
        if parsed.scheme == "http" and not self._names_host(host):
            raise TargetRefused(f"{host} is not in the webhook allow-list: use https")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and (reason := refusal(literal)) and not self._allows(host, literal):
            raise TargetRefused(reason)
        return parsed, literal

    async def resolve(self, url: str | httpx.URL) -> Target:
        """Check ``url``, resolve its host and check every address; else ``TargetRefused``."""
        parsed, literal = self._check(url)
        if literal is not None:
            return Target(parsed, (literal,))
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        try:
            addresses = await self.resolver(host, port)
        except OSError as error:
            raise TargetRefused(f"{host} does not resolve: {error}") from None
        if not addresses:
            raise TargetRefused(f"{host} has no address")
        for address in addresses:
            reason = refusal(address)
            if reason and not self._allows(host, address):
                raise TargetRefused(f"{host} resolves to {reason}")
        return Target(parsed, tuple(addresses))
