"""The outbound-address policy: which destinations a user-given URL may reach, checked again at connect time."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from screener.outbound import OutboundPolicy, OutboundRefused, PolicyResolver, spelled_address

REFUSED = [
    "http://127.0.0.1/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0/",
    "http://0.0.0.0:6379/",
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]:6379/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://[ff02::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/",
    "http://localhost:8080/",
    "http://anything.localhost/",
    "https://example.com:99999/",
    "https://example.com:0/",
    "https://example.com:-1/",
    "https://example.com/a\r\nX-Evil: 1",
    "https://example.com/\x00",
    "https://exa mple.com/",
    "https://user:pw@example.com/",
    "ftp://example.com/",
    "file:///etc/passwd",
]
ALLOWED = [
    "https://example.com/hook",
    "http://8.8.8.8/",
    "https://[2001:4860:4860::8888]:8443/x",
    "https://a.example:1/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_internal_and_malformed_destinations_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused):
        OutboundPolicy().check_url(url)


@pytest.mark.parametrize("url", ALLOWED)
def test_public_destinations_pass(url: str) -> None:
    OutboundPolicy().check_url(url)


def test_numeric_spellings_are_read_like_the_c_resolver() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    for spelling in ("0x7f000001", "2130706433", "0177.0.0.1", "127.1", "0x7f.1", "017700000001"):
        assert spelled_address(spelling) == loopback, spelling
    assert spelled_address("example.com") is None
    assert spelled_address("1e3") is None


def test_the_allow_setting_opens_listed_networks_and_hosts_only() -> None:
    policy = OutboundPolicy.from_setting(["127.0.0.1/32", " 10.1.0.0/16 ", "hooks.internal", ""])
    policy.check_url("http://127.0.0.1:8080/x")
    policy.check_url("http://10.1.2.3/")
    policy.check_url("http://hooks.internal/")
    for url in ("http://127.0.0.2/", "http://10.2.0.1/", "http://[::1]/", "http://169.254.169.254/"):
        with pytest.raises(OutboundRefused):
            policy.check_url(url)


async def test_a_name_resolving_inside_the_network_is_refused_when_stored() -> None:
    with pytest.raises(OutboundRefused):
        await OutboundPolicy().check_destination("http://localhost.:6379/")  # resolves to loopback
    # A name that does not resolve passes here; the connection-time check guards it later.
    await OutboundPolicy().check_destination("https://does-not-exist.invalid/h")


class _Rebinding(AbstractResolver):
    """A resolver whose answer changes between the check and the connection (DNS rebinding)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        address = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=socket.AI_NUMERICHOST)
        ]

    async def close(self) -> None:
        return None


async def test_every_connection_checks_the_addresses_it_resolves() -> None:
    resolver = PolicyResolver(OutboundPolicy(), _Rebinding(["93.184.216.34", "127.0.0.1"]))
    first = await resolver.resolve("rebind.example", 80)
    assert first[0]["host"] == "93.184.216.34"
    with pytest.raises(OutboundRefused):
        await resolver.resolve("rebind.example", 80)


async def test_a_policy_session_refuses_loopback_even_when_the_url_was_checked_earlier() -> None:
    app = web.Application()
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="secret")

    app.router.add_post("/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with OutboundPolicy().client_session() as session:
            with pytest.raises(OutboundRefused):
                await session.post(f"http://127.0.0.1:{server.port}/x")
            # "localhost." is a name: the resolver sees its loopback address and refuses it.
            with pytest.raises(OutboundRefused):
                await session.post(f"http://localhost.:{server.port}/y")
        allowed = OutboundPolicy.from_setting(["127.0.0.1/32", "::1/128"])
        async with allowed.client_session() as session, session.post(f"http://127.0.0.1:{server.port}/z") as ok:
            assert ok.status == 200
    finally:
        await server.close()
    assert hits == ["/z"]
