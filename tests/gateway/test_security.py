"""Security: tokens (forged, expired, wrong audience, JWKS), rate limits, spoofing, body caps, CORS, frames."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from nats.aio.client import Client as NATS

from gateway.ratelimit import client_bucket, client_ip, parse_networks
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import make_alert, publish_alert, token

Client = TestClient[web.Request, web.Application]


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


BAD_TOKENS = {
    "forged": lambda: token(secret="not-the-secret-at-all-0123456789"),
    "expired": lambda: token(expires_in=-120),
    "wrong_audience": lambda: token(aud="anon"),
    "no_sub": lambda: jwt.encode({"aud": "authenticated", "exp": 9999999999}, "x" * 40, algorithm="HS256"),
    "alg_none": lambda: jwt.encode({"sub": "u", "aud": "authenticated", "exp": 9999999999}, None, algorithm="none"),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_bad_tokens_are_401_json_on_user_endpoints(gw: Client, kind: str) -> None:
    response = await gw.get("/api/settings", headers=bearer(BAD_TOKENS[kind]()))
    body = await response.json()
    assert response.status == 401
    assert body["code"] == "unauthorized" and body["error"] == "Invalid or expired token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_bad_tokens_are_anonymous_on_public_endpoints(gw: Client, kind: str) -> None:
    # client.md, decision 3: a 401 on a public endpoint would log the web client out.
    for path in ("/api/health", "/api/alerts", "/api/alert-rules", "/api/metrics/", "/api/tickers"):
        response = await gw.get(path, headers=bearer(BAD_TOKENS[kind]()))
        assert response.status == 200, (path, await response.text())


async def test_expired_and_wrong_audience_say_why(gw: Client) -> None:
    expired = await (await gw.get("/api/watchlist", headers=bearer(token(expires_in=-120)))).json()
    assert "expired" in expired["message"]
    audience = await (await gw.get("/api/watchlist", headers=bearer(token(aud="other")))).json()
    assert "audience" in audience["message"]


async def test_malformed_authorization_header_is_401_only_where_a_user_is_needed(gw: Client) -> None:
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert (await gw.get("/api/webhooks", headers=basic)).status == 401
    assert (await gw.get("/api/alerts", headers=basic)).status == 200


@pytest.mark.parametrize("kind", ["forged", "expired", "wrong_audience"])
async def test_websocket_with_a_bad_token_is_the_anonymous_public_stream(
    gw: Client, nats_client: NATS, kind: str
) -> None:
    # client.md, decision 11: no 4401 close (the web client would reconnect every 2 s, forever).
    ws = await gw.ws_connect(f"/ws/alerts?token={BAD_TOKENS[kind]()}")
    alert = make_alert("BTCUSDT", "futures_pioneer_bull")
    await publish_alert(nats_client, alert)
    frame = await ws.receive_json(timeout=5)
    assert frame == alert.public_view()
    await ws.close()


@pytest.fixture
async def jwks() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Serve a JWKS with one RSA and one EC key on a local port; yield (url, private keys by kid)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, key, alg in (("rsa-1", rsa_key, "RS256"), ("ec-1", ec_key, "ES256")):
        algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
        public = json.loads(algo.to_jwk(key.public_key()))
        keys.append({**public, "kid": kid, "alg": alg, "use": "sig"})

    async def serve(_: web.Request) -> web.Response:
        return web.json_response({"keys": keys})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", serve)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/.well-known/jwks.json")), {"rsa-1": rsa_key, "ec-1": ec_key}
    await server.close()


async def test_rs256_and_es256_tokens_from_a_jwks_url(
    make_gateway: GatewayFactory, jwks: tuple[str, dict[str, Any]]
) -> None:
    url, keys = jwks
    gw = await make_gateway(jwks_url=url)
    rs = token("rsa-user", algorithm="RS256", key=keys["rsa-1"], headers={"kid": "rsa-1"})
    es = token("ec-user", algorithm="ES256", key=keys["ec-1"], headers={"kid": "ec-1"})
    for value, user in ((rs, "rsa-user"), (es, "ec-user")):
        response = await gw.get("/api/settings", headers=bearer(value))
        assert response.status == 200, await response.text()
        assert (await response.json())["user_id"] == user
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = token("rsa-user", algorithm="RS256", key=impostor, headers={"kid": "rsa-1"})
    assert (await gw.get("/api/settings", headers=bearer(forged))).status == 401
    unknown_kid = token("x", algorithm="RS256", key=keys["rsa-1"], headers={"kid": "nope"})
    assert (await gw.get("/api/settings", headers=bearer(unknown_kid))).status == 401
    # The HS256 secret still works next to the JWKS.
    assert (await gw.get("/api/settings", headers=bearer(token("hs-user")))).status == 200


async def test_rate_limit_answers_429_with_retry_after(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(rate_limit_per_minute=5)
    statuses = [(await gw.get("/api/alerts")).status for _ in range(5)]
    assert statuses == [200] * 5
    refused = await gw.get("/api/alerts")
    body = await refused.json()
    assert refused.status == 429
    assert body["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (await gw.get("/health/live")).status == 200  # probes are never limited


async def test_spoofed_forwarded_for_does_not_escape_the_limit(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(rate_limit_per_minute=3)
    statuses = [(await gw.get("/api/alerts", headers={"X-Forwarded-For": f"10.0.0.{i}"})).status for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


async def test_forwarded_for_is_believed_from_a_trusted_proxy(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(rate_limit_per_minute=2, trusted_proxies=["127.0.0.1/32", "::1"])
    for client in ("203.0.113.1", "203.0.113.2"):
        headers = {"X-Forwarded-For": client}
        assert [(await gw.get("/api/alerts", headers=headers)).status for _ in range(3)] == [200, 200, 429]
    # A client prepending a forged hop is still counted as itself (the rightmost untrusted address).
    forged = {"X-Forwarded-For": "198.51.100.9, 203.0.113.1"}
    assert (await gw.get("/api/alerts", headers=forged)).status == 429


async def test_an_ipv6_client_is_limited_by_its_64_not_by_each_address(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(rate_limit_per_minute=2, trusted_proxies=["127.0.0.1/32", "::1"])
    # One host may use any address of its /64: a fresh one per request must not mean a fresh limit.
    same_host = [f"2001:db8:1:2::{i:x}" for i in range(1, 4)]
    statuses = [(await gw.get("/api/alerts", headers={"X-Forwarded-For": a})).status for a in same_host]
    assert statuses == [200, 200, 429]
    assert (await gw.get("/api/alerts", headers={"X-Forwarded-For": "2001:db8:1:3::1"})).status == 200


async def test_rate_limit_is_shared_by_replicas_through_redis(make_gateway: GatewayFactory) -> None:
    first = await make_gateway(rate_limit_per_minute=4)
    second = await make_gateway(rate_limit_per_minute=4)
    statuses = [(await (first if i % 2 else second).get("/api/alerts")).status for i in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_client_ip_reads_forwarded_for_only_behind_trusted_proxies() -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_ip("192.0.2.1", "1.2.3.4", trusted) == "192.0.2.1"
    assert client_ip("10.1.1.1", "1.2.3.4", trusted) == "1.2.3.4"
    assert client_ip("10.1.1.1", "6.6.6.6, 1.2.3.4, 10.2.2.2", trusted) == "1.2.3.4"
    assert client_ip("10.1.1.1", "garbage", trusted) == "10.1.1.1"
    assert client_ip("10.1.1.1", None, trusted) == "10.1.1.1"


def test_client_bucket_is_the_ipv4_address_or_the_ipv6_64() -> None:
    assert client_bucket("192.0.2.1") == "192.0.2.1"
    assert client_bucket("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert client_bucket("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_bucket("unknown") == "unknown"


async def test_oversized_bodies_are_413_json(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(max_body_bytes=2048)
    big = json.dumps({"preferences": {"x": "y" * 5000}})
    declared = await gw.post("/api/settings", data=big, headers={**bearer(token()), "Content-Type": "application/json"})
    assert declared.status == 413
    assert (await declared.json())["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    streamed = await gw.post(
        "/api/settings", data=chunks(), headers={**bearer(token()), "Content-Type": "application/json"}
    )
    assert streamed.status == 413


async def test_cors_only_for_configured_origins(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(cors_origins=["https://app.example"])
    allowed = await gw.get("/api/alerts", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = await gw.get("/api/alerts", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = await gw.options(
        "/api/alert-rules/x",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"},
    )
    assert preflight.status == 204 and "PUT" in preflight.headers["Access-Control-Allow-Methods"]
    refused = await gw.options(
        "/api/alerts", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert refused.status == 403


async def test_malformed_frames_in_v2_get_error_envelopes(gw: Client, nats_client: NATS) -> None:
    ws = await gw.ws_connect("/ws/alerts?protocol=2")
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    for frame in (
        "{",
        "[1,2]",
        '{"type": 5}',
        '{"type": "launch"}',
        '{"type":"subscribe","symbols":"BTC"}',
        '{"type":"subscribe","symbols":["$$$"]}',
        '{"type":"resume","last_alert_id":"x"}',
    ):
        await ws.send_str(frame)
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error" and reply["error"]["code"] == "invalid_message", frame
    await ws.send_bytes(b"\xff\xfe")
    assert (await ws.receive_json(timeout=5))["type"] == "error"
    alert = make_alert()
    await publish_alert(nats_client, alert)
    assert (await ws.receive_json(timeout=5))["data"]["id"] == alert.id  # still served
    await ws.close()


async def test_oversized_frames_close_the_socket(gw: Client) -> None:
    ws = await gw.ws_connect("/ws/alerts?protocol=2")
    await ws.receive_json(timeout=5)
    await ws.send_str("x" * 100_000)
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and ws.close_code == 1009


async def test_a_flood_of_malformed_frames_is_cut_off(gw: Client) -> None:
    ws = await gw.ws_connect("/ws/alerts")
    for _ in range(25):
        await ws.send_str("garbage")
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and ws.close_code == 1008  # raw mode never got a non-alert frame


async def test_invalid_protocol_parameter_closes_with_policy_violation(gw: Client) -> None:
    ws = await gw.ws_connect("/ws/alerts?protocol=9")
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and ws.close_code == 1008
