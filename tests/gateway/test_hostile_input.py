"""Hostile input gets a 400 naming the field, never a 500, and nothing stored makes a later read fail.

JSON a store or an encoder cannot hold (NaN, Infinity, ``\\u0000``, lone surrogates, deep nesting),
instants near the ends of the calendar, NUL in queries, tokens whose ``alg`` does not fit their
key, and requests the HTTP parser itself refuses (answered in the JSON error body).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import auth, token

Client = TestClient[web.Request, web.Application]

# Raw bodies: json.dumps would refuse or rewrite most of them.
BAD_PREFERENCES = {
    "nan": b'{"preferences": {"x": NaN}}',
    "infinity": b'{"preferences": {"x": -Infinity}}',
    "overflow": b'{"preferences": {"x": 1e999}}',
    "nul": b'{"preferences": {"x": "a\\u0000b"}}',
    "lone_surrogate": b'{"preferences": {"x": "\\ud800"}}',
    "nul_key": b'{"preferences": {"a\\u0000": 1}}',
    "deep": b'{"preferences": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}",
    "deep_list": b'{"preferences": ' + b"[" * 40 + b"]" * 40 + b"}",
}


@pytest.mark.parametrize("kind", sorted(BAD_PREFERENCES))
async def test_unstorable_json_is_400_and_settings_stay_readable(gw: Client, kind: str) -> None:
    headers = {**auth("mallory"), "Content-Type": "application/json"}
    response = await gw.post("/settings", data=BAD_PREFERENCES[kind], headers=headers)
    body = await response.json()
    assert response.status == 400, body
    # Thousands of levels are refused by the parser before any field is known: then it is the body.
    assert body["code"] == "invalid_parameter"
    assert ("'body'" if kind == "deep" else "'preferences") in body["message"]
    read = await gw.get("/settings", headers=auth("mallory"))
    assert read.status == 200, await read.text()


async def test_a_body_of_thousands_of_levels_is_400_on_every_json_endpoint(gw: Client) -> None:
    deep = b"[" * 8000 + b"]" * 8000
    for method, path in (("POST", "/api/alert-rules"), ("POST", "/api/webhooks"), ("PUT", "/api/watchlist")):
        response = await gw.request(method, path, data=deep, headers={**auth(), "Content-Type": "application/json"})
        body = await response.json()
        assert response.status == 400 and body["code"] == "invalid_parameter", (path, body)
        assert "nested deeper" in body["message"]


@pytest.mark.parametrize("field", ["name", "description", "expression"])
@pytest.mark.parametrize("bad", ["x\u0000y", "x\ud800y"])
async def test_nul_or_lone_surrogate_in_a_rule_is_400_naming_the_field(gw: Client, field: str, bad: str) -> None:
    rule = {"name": "n", "description": "d", "expression": "c5m > 1"}
    raw = json.dumps({**rule, field: bad}).encode()  # ensure_ascii: the surrogate travels as \ud800
    response = await gw.post("/api/alert-rules", data=raw, headers={**auth(), "Content-Type": "application/json"})
    body = await response.json()
    assert response.status == 400, body
    assert f"'{field}'" in body["message"]


@pytest.mark.parametrize("field", ["webhook_url", "secret", "name"])
@pytest.mark.parametrize("bad", ["\u0000", "\udfff"])
async def test_nul_or_lone_surrogate_in_a_webhook_is_400_naming_the_field(gw: Client, field: str, bad: str) -> None:
    hook = {"name": "n", "webhook_type": "http", "webhook_url": "https://hooks.example/h", "secret": "s"}
    raw = json.dumps({**hook, field: hook[field] + bad}).encode()
    response = await gw.post("/api/webhooks", data=raw, headers={**auth(), "Content-Type": "application/json"})
    body = await response.json()
    assert response.status == 400, body
    assert f"'{field}'" in body["message"]
    listed = await gw.get("/api/webhooks", headers=auth())
    assert listed.status == 200 and (await listed.json())["count"] == 0


@pytest.mark.parametrize(
    "since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01", "9999-12-31T23:59:59.999999"]
)
async def test_since_near_the_ends_of_the_calendar_is_400(gw: Client, since: str) -> None:
    response = await gw.get("/api/alerts", params={"since": since})
    body = await response.json()
    assert response.status == 400, body
    assert "since" in body["message"]


@pytest.mark.parametrize("query", ["symbol=BTC%00USDT", "rule_type=%ED%A0%80", "since=%00", "limit=1%00"])
async def test_nul_and_surrogates_in_queries_are_400(gw: Client, query: str) -> None:
    response = await gw.get(f"/api/alerts?{query}")
    assert response.status == 400, await response.text()
    assert (await response.json())["code"] == "invalid_parameter"


@pytest.fixture
async def jwks() -> AsyncIterator[tuple[str, Any, Any]]:
    """Serve a JWKS of one RSA and one EC key; yield (url, rsa key, ec key)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "use": "sig"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1", "use": "sig"},
    ]

    async def serve(_: web.Request) -> web.Response:
        return web.json_response({"keys": keys})

    app = web.Application()
    app.router.add_get("/jwks.json", serve)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/jwks.json")), rsa_key, ec_key
    await server.close()


async def test_a_token_whose_alg_does_not_fit_its_key_is_401_not_500(
    make_gateway: GatewayFactory, jwks: tuple[str, Any, Any]
) -> None:
    url, _, ec_key = jwks
    gw = await make_gateway(jwks_url=url)
    # Signed with the EC key but naming the RSA key: the verifier must not hand an RSA key to ES256.
    mismatched = token("eve", algorithm="ES256", key=ec_key, headers={"kid": "rsa-1"})
    response = await gw.get("/api/settings", headers={"Authorization": f"Bearer {mismatched}"})
    body = await response.json()
    assert response.status == 401, body
    assert "does not match" in body["message"]
    # On the WebSocket the same token is anonymous, and the upgrade succeeds.
    ws = await gw.ws_connect(f"/ws/alerts?protocol=2&token={mismatched}")
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello" and hello["user_id"] is None
    await ws.close()


async def _raw_request(client: Client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
        b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
    ids=["oversized_header", "bad_content_length", "two_content_lengths", "malformed_header"],
)
async def test_the_http_parsers_rejections_have_the_json_error_body(gw: Client, request_bytes: bytes) -> None:
    status, headers, body = await _raw_request(gw, request_bytes)
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    assert set(error) == {"error", "code", "message"}


@pytest.mark.parametrize("path", ["/auth/login", "/api/watchlist"])
async def test_a_body_not_in_its_content_encoding_is_400_naming_the_body(gw: Client, path: str) -> None:
    # aiohttp finds out only when the handler reads the body, and raised RequestPayloadError: a 500.
    response = await gw.post(
        path,
        data=b"not gzip at all",
        headers={**auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    body = await response.json()
    assert response.status == 400, body
    assert body["code"] == "invalid_body" and "'body'" in body["message"]


async def test_parser_rejections_count_against_the_senders_rate_limit(
    make_gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    gw = await make_gateway(rate_limit_per_minute=3)
    for _ in range(3):
        await _raw_request(gw, b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    await asyncio.sleep(0.2)  # the charges are written in the background
    limited = await gw.get("/api/alerts")
    assert limited.status == 429


async def test_a_token_longer_than_8_kb_is_a_json_401(gw: Client) -> None:
    response = await gw.get("/api/settings", headers={"Authorization": "Bearer " + "a" * 9000})
    body = await response.json()
    assert response.status == 401 and "too long" in body["message"]


async def test_readiness_checks_its_dependencies_at_most_once_a_second(
    gw: Client, redis_client: aioredis.Redis
) -> None:
    async def pings() -> int:
        stats = await redis_client.info("commandstats")
        return int(stats.get("cmdstat_ping", {}).get("calls", 0))

    assert (await gw.get("/health/ready")).status == 200
    before = await pings()
    statuses = await asyncio.gather(*(gw.get("/health/ready") for _ in range(50)))
    assert all(r.status == 200 for r in statuses)
    assert await pings() - before <= 1


async def test_an_integer_beyond_64_bits_in_preferences_reads_back(gw: Client) -> None:
    headers = {**auth("bigint"), "Content-Type": "application/json"}
    huge = b'{"preferences": {"x": -41180000000000000000000000000}}'  # jsonb keeps every digit
    written = await gw.post("/settings", data=huge, headers=headers)
    assert written.status == 200, await written.text()
    read = await gw.get("/settings", headers=auth("bigint"))
    assert read.status == 200, await read.text()
    assert (await read.json())["preferences"]["x"] == pytest.approx(-4.118e28)
