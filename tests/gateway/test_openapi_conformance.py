"""Schemathesis against a running gateway: every check, every operation, no 5xx and no conformance failure.

The gateway runs in this test's event loop on the session's real servers; schemathesis runs as its
own process (its CLI) with a valid token, reading ``/api/openapi.json``. Its runtime stays modest:
at most ``MAX_EXAMPLES`` cases per operation, a fixed seed, and the stateful phase left out.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import token

MAX_EXAMPLES = 20
RUN_TIMEOUT_SECONDS = 600
ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")


async def test_schemathesis_finds_no_failure(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    # The limit is per user: a generous one, so schemathesis meets the API and not only its 429s.
    gw = await make_gateway(rate_limit_per_minute=1_000_000)
    base = f"http://{gw.host}:{gw.port}"
    process = await asyncio.create_subprocess_exec(
        str(ST),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/api/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "13",
        "--phases",
        "examples,coverage,fuzzing",
        "--header",
        f"Authorization: Bearer {token('schemathesis')}",
        "--request-timeout",
        "10",
        "--exclude-path",
        "/ws/alerts",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"},
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_SECONDS)
    text = output.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    assert process.returncode == 0, text[-20_000:]
