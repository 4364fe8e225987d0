"""Where the product may send a request to a URL a user gave it (webhooks): the outbound-address policy.

A webhook URL is user input, so without a policy the notifier and ``POST /api/webhooks/{id}/test``
would reach whatever the servers can: Redis on loopback, the cloud's metadata service, the cluster's
private network. ``OutboundPolicy`` refuses every address that is not globally routable (loopback,
private, link-local, shared, multicast, unspecified, reserved, documentation ranges; IPv4, IPv6 and
IPv4 inside IPv6), the metadata host names, and the numeric spellings of IPv4 that resolvers accept
(``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``127.1``), unless ``SCREENER_OUTBOUND_ALLOW`` lists
the host or a network holding the address.

The check runs twice: when a URL is stored (``check_destination``: a 400 naming the field) and at
every connection (``client_session``: a resolver that checks each address a name resolves to, so a
name that resolves elsewhere later, DNS rebinding, is refused when it matters).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RESOLVE_TIMEOUT_SECONDS = 3.0
# Names that reach a cloud's instance metadata without looking like an address.
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "localhost",
        "localhost.localdomain",
    }
)
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and RFC 8215).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_NUMERIC = frozenset("0123456789abcdefxABCDEFX.")


class OutboundRefused(ValueError):
    """A destination is not allowed; the message says why (safe to show to the URL's owner)."""


@dataclass(frozen=True)
class OutboundPolicy:
    """Which destinations a user-given URL may reach: global addresses, plus an explicit allow list."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_setting(cls, values: Iterable[str]) -> OutboundPolicy:
        """Return the policy of ``SCREENER_OUTBOUND_ALLOW`` entries: CIDRs, addresses or host names."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for value in (v.strip() for v in values):
            if not value:
                continue
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                hosts.add(value.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    # --- addresses -------------------------------------------------------------------------------
    def address_allowed(self, address: IPAddress) -> bool:
        """Return whether a connection to ``address`` is allowed."""
        if any(address.version == net.version and address in net for net in self.allowed_networks):
            return True
        return all(_is_public(candidate) for candidate in _embedded(address))

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raise ``OutboundRefused`` unless ``address`` (which ``host`` names) may be reached."""
        if not self.address_allowed(address):
            raise OutboundRefused(f"{host[:100]} is {address}, an address that is not allowed (not public)")

    # --- URLs ------------------------------------------------------------------------------------
    def check_url(self, url: str) -> tuple[str, IPAddress | None]:
        """Check ``url`` without resolving it; return its host and the address it spells, if any.

        Refuse control characters and spaces, a scheme other than http(s), credentials, a port
        outside 1-65535, metadata host names and addresses that are not allowed.
        """
        if any(ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in url):
            raise OutboundRefused("the URL must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise OutboundRefused("the URL's port must be a number between 1 and 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundRefused("the URL must be http(s) with a host")
        if port is not None and not 1 <= port <= 65535:
            raise OutboundRefused("the URL's port must be a number between 1 and 65535")
        if parts.username is not None or parts.password is not None:
            raise OutboundRefused("the URL must not carry credentials")
        host = parts.hostname.rstrip(".").lower()
        if host in self.allowed_hosts:
            return host, None
        if host in METADATA_HOSTS or host.endswith((".localhost", ".internal")):
            raise OutboundRefused(f"{host[:100]} is an internal host name, which is not allowed")
        address = spelled_address(host)
        if address is not None:
            self.check_address(host, address)
        return host, address

    async def check_destination(self, url: str) -> None:
        """Check ``url`` and every address its host resolves to now; raise ``OutboundRefused`` if refused.

        A name that does not resolve (yet) passes: the connection-time check still guards it.
        """
        host, address = self.check_url(url)
        if address is not None or host in self.allowed_hosts:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError, UnicodeError):
            return
        for info in infos:
            self.check_address(host, ipaddress.ip_address(str(info[4][0]).split("%")[0]))

    def client_session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """Return an aiohttp session whose every connection obeys this policy (DNS rebinding included)."""
        # No DNS cache: every connection resolves again and the resolver checks every address.
        connector = aiohttp.TCPConnector(
            resolver=PolicyResolver(self), use_dns_cache=False, limit=kwargs.pop("limit", 100)
        )
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_request_start)
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace], **kwargs)

    async def _on_request_start(
        self, _session: aiohttp.ClientSession, _ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        # aiohttp does not call the resolver for a literal address, so the literal is checked here.
        self.check_url(str(params.url))


class PolicyResolver(AbstractResolver):
    """Resolve like aiohttp does, then refuse the host unless every address is allowed."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the addresses of ``host``; raise ``OutboundRefused`` if any of them is not allowed."""
        name = host.rstrip(".").lower()
        results = await self._inner.resolve(host, port, family)
        if name in self._policy.allowed_hosts:
            return results
        if name in METADATA_HOSTS:
            raise OutboundRefused(f"{name[:100]} is an internal host name, which is not allowed")
        # Every address, not just the first: a name answering one public and one private address
        # would otherwise let a retry land on the private one.
        for result in results:
            self._policy.check_address(name, ipaddress.ip_address(result["host"].split("%")[0]))
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


def spelled_address(host: str) -> IPAddress | None:
    """Return the address a host spells as a literal, including IPv4's legacy numeric forms, else None.

    ``0x7f000001``, ``2130706433``, ``0177.0.0.1`` and ``127.1`` all mean 127.0.0.1 to the C resolver
    (``inet_aton``), so they are read the way it reads them.
    """
    literal = host.strip("[]")
    try:
        return ipaddress.ip_address(literal.split("%")[0])
    except ValueError:
        pass
    if literal and set(literal) <= _IPV4_NUMERIC and literal[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(literal))
        except OSError:
            return None
    return None


def _embedded(address: IPAddress) -> list[IPAddress]:
    """Return ``address`` plus any IPv4 address it carries (mapped, 6to4, Teredo, NAT64)."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        if any(address in net for net in _NAT64):
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        compatible = int(address)
        if compatible >> 32 == 0 and compatible > 1:  # deprecated IPv4-compatible ::a.b.c.d
            found.append(ipaddress.IPv4Address(compatible))
    return found


def _is_public(address: IPAddress) -> bool:
    # ``is_global`` is False for loopback, private, link-local (cloud metadata), shared (100.64/10),
    # unspecified, reserved, benchmarking and documentation ranges; multicast is refused on top.
    return address.is_global and not address.is_multicast and not address.is_reserved
