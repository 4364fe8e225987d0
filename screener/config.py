"""One frozen settings object, read once from the environment.

Every setting is an environment variable named ``SCREENER_<FIELD>`` (upper case). A variable with
the ``SCREENER_`` prefix that names no field, or one whose value does not parse, stops start-up with
an error naming it: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

ENV_PREFIX = "SCREENER_"


class ConfigError(Exception):
    """A setting is unknown or malformed; the message names it."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], BeforeValidator(_split_csv)]


class Settings(BaseModel):
    """The screener's configuration. Fields are documented in README.md ("Configuration")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- servers: None means "start an embedded one" -------------------------------------------
    nats_url: str | None = None
    redis_url: str | None = None
    postgres_dsn: str | None = None
    nats_monitor_url: str | None = None
    data_dir: Path = Path(".screener")

    # --- storage ---------------------------------------------------------------------------------
    retention_hours: int = Field(default=48, ge=1)

    # --- streams and workers ---------------------------------------------------------------------
    stream_max_age_hours: int = Field(default=48, ge=1)
    stream_max_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024)
    duplicate_window_seconds: int = Field(default=600, ge=1)
    max_ack_pending: int = Field(default=2000, ge=1)
    max_deliver: int = Field(default=5, ge=1)
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    batch_size: int = Field(default=1000, ge=1)
    worker_concurrency: int = Field(default=2, ge=1)
    health_port: int = Field(default=0, ge=0, le=65535)

    # --- collector ---------------------------------------------------------------------------------
    source: Literal["replay", "binance"] = "replay"
    replay_data: Path | None = None
    replay_speed: str = "60"
    replay_loop: bool = True
    replay_virtual_symbols: int = Field(default=0, ge=0)
    binance_rest_url: str = "https://fapi.binance.com"
    binance_ws_url: str = "wss://fstream.binance.com"
    symbols: CsvList = Field(default_factory=list)
    top_n: int = Field(default=0, ge=0)
    symbols_refresh_seconds: float = Field(default=3600.0, gt=0)
    stale_connection_seconds: float = Field(default=30.0, gt=0)
    connection_lifetime_seconds: float = Field(default=23 * 3600.0, gt=0)
    emit_forming: bool = False
    forming_throttle_seconds: float = Field(default=1.0, gt=0)
    backfill_minutes: int = Field(default=2880, ge=1)  # history filled from REST when nothing is stored
    replay_warmup_minutes: int = Field(default=20160, ge=0)  # replayed data written directly before streaming

    # --- gateway -----------------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    jwt_secret: str | None = None
    jwt_audience: str = "authenticated"
    jwks_url: str | None = None
    rate_limit_per_minute: int = Field(default=100, ge=1)
    trusted_proxies: CsvList = Field(default_factory=list)
    cors_origins: CsvList = Field(default_factory=list)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    ws_send_queue: int = Field(default=256, ge=1)
    ws_heartbeat_seconds: float = Field(default=20.0, gt=0)

    # --- notifier ----------------------------------------------------------------------------------
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_rate_per_minute: int = Field(default=30, ge=1)

    # --- observability -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    otel_exporter: Literal["none", "otlp", "console"] = "none"
    otel_endpoint: str | None = None
    service_name: str = "screener"


def _known_env_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read the settings from ``environ`` (default: the process environment).

    Raise ``ConfigError`` naming every unknown ``SCREENER_*`` variable and every malformed value.
    """
    env = dict(os.environ if environ is None else environ)
    unknown = sorted(k for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() not in _known_env_names())
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)} (see README.md, Configuration)")
    values: dict[str, object] = {
        key[len(ENV_PREFIX) :].lower(): value for key, value in env.items() if key.upper().startswith(ENV_PREFIX)
    }
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid setting(s): {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return load_settings()
