"""`screener up` as a new user runs it: embedded servers, every process healthy, data flowing, clean Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from screener.embedded.servers import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _get_json(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except OSError:
        return 0, None


async def _poll(url: str, accept, seconds: float) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        status, body = await asyncio.to_thread(_get_json, url)
        last = (status, body)
        if status == 200 and accept(body):
            return body
        await asyncio.sleep(1)
    raise AssertionError(f"{url} never gave what was expected; last answer: {str(last)[:500]}")


async def test_screener_up_runs_the_pipeline_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env.update(
        {
            "SCREENER_DATA_DIR": str(tmp_path / "state"),
            "SCREENER_GATEWAY_PORT": str(port),
            "SCREENER_REPLAY_SPEED": "600",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "screener.cli", "up"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []

    async def read_until(marker: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(process.stdout.readline)
            if not line:
                break
            output.append(line)
            if marker in line:
                return
        raise AssertionError(f"{marker!r} not printed; output:\n{''.join(output)}")

    try:
        await read_until("screener is up.", 180)
        await read_until("all 6 processes healthy", 30)
        base = f"http://127.0.0.1:{port}"
        health = await _poll(f"{base}/api/health", lambda body: body.get("status") == "ok", 60)
        assert isinstance(health, dict)
        # The default replay is the 16-symbol 2025-05 recording, BTCUSDT included (the V2 rules need it).
        metrics = await _poll(f"{base}/api/metrics/", lambda body: isinstance(body, list) and len(body) >= 16, 120)
        assert {m["symbol"] for m in metrics} >= {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "AVAXUSDT"}
        alerts = await _poll(f"{base}/api/alerts?limit=5", lambda body: isinstance(body, list) and body, 240)
        assert {"id", "symbol", "rule_type", "timestamp", "price"} <= set(alerts[0])
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
        output.append(rest or "")
    assert process.returncode == 0, "".join(output)[-3000:]
    assert "stopped" in "".join(output)
    for log_file in sorted((tmp_path / "state" / "logs").glob("*.log")):  # each log says its process stopped
        last = log_file.read_text().splitlines()[-1]
        assert "screener up:" in last and "stopped" in last, (log_file.name, last)
