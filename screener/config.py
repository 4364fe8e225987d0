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
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator

ENV_PREFIX = "SCREENER_"
# The client's plan slugs (client.md section 4), each sold as the Whop plan of ``SCREENER_WHOP_PLAN_<SLUG>``.
PLAN_SLUGS = ("screener_monthly", "screener_yearly", "bundle_monthly", "bundle_yearly", "tv_monthly", "tv_yearly")
_WHOP_PLAN_ID = r"^plan_[A-Za-z0-9]{1,64}$"
# The recording the replay plays when ``replay_data`` is unset (a folder of data/klines/): the
# 16-symbol month with BTCUSDT, so the cross-symbol rules (the V2 ones) fire too.
DEFAULT_REPLAY_RECORDING = "binance-um-2025-05"
# Warm-up (minutes written straight to PostgreSQL before streaming) of each shipped recording when
# ``replay_warmup_minutes`` is unset: 14 days give every window and the 1h bars of change_14d; the
# extra minutes start the stream some 20 s (at 60x) before the recording's first alerts, so a new
# user sees real alerts within the first minute.
WARMUP_14_DAYS = 14 * 1440
RECORDING_WARMUP_MINUTES: dict[str, int] = {
    # 2025-05-23 18:33 UTC (the recording starts 2025-05-04 15:33, ADAUSDT on 05-09 18:18), 23
    # minutes before the first alerts (5 Big Bear on AVAXUSDT and ENAUSDT at 18:56)
    "binance-um-2025-05": WARMUP_14_DAYS + 5 * 1440 + 180,
    # 2026-02-15 08:10 UTC, just before a market-wide drop
    "binance-um-2026-02": WARMUP_14_DAYS + 490,
}


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
    nats_url: str | None = Field(
        default=None, description="NATS server with JetStream; unset: `screener up` starts one"
    )
    redis_url: str | None = Field(default=None, description="Redis server (6.2+); unset: `screener up` starts one")
    postgres_dsn: str | None = Field(
        default=None, description="PostgreSQL DSN (TimescaleDB used when present); unset: `screener up` starts one"
    )
    nats_monitor_url: str | None = Field(
        default=None, description="NATS monitoring endpoint (`/jsz`), read by `scale-advice` and KEDA"
    )
    data_dir: Path = Field(
        default=Path(".screener"),
        description="where `screener up` keeps embedded servers' data and the children's logs",
    )

    # --- storage ---------------------------------------------------------------------------------
    retention_hours: int = Field(
        default=48, ge=1, description="how long candles, metrics snapshots, alert history and delivery logs are kept"
    )

    # --- streams and workers ---------------------------------------------------------------------
    stream_max_age_hours: int = Field(
        default=48, ge=1, description="JetStream stream age limit (dead letters keep 7x as long)"
    )
    stream_max_bytes: int = Field(
        default=2 * 1024**3, ge=1024 * 1024, description="JetStream stream size limit per stream"
    )
    duplicate_window_seconds: int = Field(
        default=600, ge=1, description="JetStream duplicate window: a re-published event id inside it is dropped"
    )
    max_ack_pending: int = Field(
        default=2000, ge=1, description="unacknowledged events a function's consumer may have outstanding"
    )
    max_crashes: int = Field(
        default=5, ge=1, description="crashes of a handler on one event before the event is dead-lettered"
    )
    ack_wait_seconds: float = Field(
        default=10.0,
        gt=0,
        description="seconds before an event a killed worker held is redelivered (a live batch is kept in progress)",
    )
    batch_size: int = Field(default=100, ge=1, description="events a worker fetches per batch")
    worker_concurrency: int = Field(default=2, ge=1, description="batches a worker processes at once")
    health_port: int = Field(
        default=0, ge=0, le=65535, description="worker health endpoint port (`/healthz`, `/readyz`); 0: none"
    )

    # --- collector ---------------------------------------------------------------------------------
    source: Literal["replay", "binance"] = Field(
        default="replay", description="`replay` (recorded klines) or `binance` (live)"
    )
    replay_data: Path | None = Field(
        default=None,
        description=f"folder of recorded klines to replay; unset: the shipped `data/klines/{DEFAULT_REPLAY_RECORDING}`",
    )
    replay_speed: str = Field(
        default="60",
        description="`60` (a factor: 60 minutes per minute), `realtime`, or `max` (as fast as the pipeline takes)",
    )
    replay_loop: bool = Field(
        default=True, description="replay again from the start, shifted forward in time, when the data ends"
    )
    replay_time: Literal["live", "recorded"] = Field(
        default="live",
        description="`live`: shift the recording so its stream runs at the present (warm-up history before it, "
        "alerts with current timestamps; it plays at `replay_speed` until it reaches now, then in real time); "
        "`recorded`: keep the recorded times (backtests, tests, fault drills)",
    )
    replay_catch_up_minutes: int = Field(
        default=720,
        ge=0,
        description="replay_time=live: the first streamed minute lies at least this far (and less than a day "
        "more) before now; the replay plays that stretch at `replay_speed`, then runs in real time",
    )
    replay_virtual_symbols: int = Field(
        default=0, ge=0, description="add N virtual symbols (time-shifted copies of the real series) for load tests"
    )
    binance_rest_url: str = Field(default="https://fapi.binance.com", description="Binance USD-M REST base URL")
    binance_ws_url: str = Field(
        default="wss://fstream.binance.com",
        description="Binance USD-M WebSocket base URL (the collector uses its `/market/stream` path)",
    )
    symbols: CsvList = Field(
        default_factory=list, description="fixed comma-separated symbol list; empty: every trading USDT perpetual"
    )
    top_n: int = Field(default=0, ge=0, description="keep only the top N symbols by 24 h quote volume; 0: all")
    collector_stale_seconds: float = Field(
        default=180.0,
        gt=0,
        description="the collector's `/healthz` fails once it has streamed no closed candle for this long",
    )
    symbols_refresh_seconds: float = Field(
        default=3600.0, gt=0, description="how often the symbol list is refreshed from `exchangeInfo`"
    )
    stale_connection_seconds: float = Field(
        default=30.0, gt=0, description="a WebSocket silent this long is treated as dead"
    )
    connection_lifetime_seconds: float = Field(
        default=23 * 3600.0,
        gt=0,
        description="replace each WebSocket connection after this long (Binance's limit is 24 h)",
    )
    emit_forming: bool = Field(
        default=False, description="also emit updates of the forming minute (provisional metrics)"
    )
    forming_throttle_seconds: float = Field(
        default=1.0, gt=0, description="at most one forming-minute update per symbol per this many seconds"
    )
    backfill_minutes: int = Field(
        default=2880, ge=1, description="live: minutes of history filled from REST per symbol when none is stored"
    )
    replay_warmup_minutes: int | None = Field(
        default=None,
        ge=0,
        description="replay: recorded minutes written straight to PostgreSQL before streaming "
        "(the last 2 days as candles, all as bars); unset: the shipped recording's own, starting it "
        "just before its first alerts (2025-05: 2025-05-23 18:33 UTC; 2026-02: 2026-02-15 08:10 UTC), "
        "14 days for any other; 0: none",
    )

    # --- gateway -----------------------------------------------------------------------------------
    gateway_host: str = Field(default="127.0.0.1", description="gateway listen address")
    gateway_port: int = Field(default=8080, ge=0, le=65535, description="gateway listen port")
    gateway_reuse_port: bool = Field(
        default=False,
        description="listen with SO_REUSEPORT, so several gateway processes share one port (the kernel "
        "spreads connections; each process fans every alert out to its own clients)",
    )
    jwt_secret: str | None = Field(
        default=None,
        description="HS256 secret of the tokens the gateway issues and accepts (Supabase's JWT secret works); "
        "unset: `screener up` generates one once and keeps it in its data folder",
    )
    jwt_audience: str = Field(default="authenticated", description="required `aud` claim")
    jwks_url: str | None = Field(default=None, description="JWKS URL for RS256/ES256 tokens")
    rate_limit_per_minute: int = Field(
        default=300,
        ge=1,
        description="requests per user (valid token) or client IP per minute (sliding window), shared by all "
        "gateway replicas; `/api/health`, `/health/*` and preflights are not counted",
    )
    trusted_proxies: CsvList = Field(
        default_factory=list, description="comma-separated proxy IPs/CIDRs whose `X-Forwarded-For` is believed"
    )
    cors_origins: CsvList = Field(
        default_factory=lambda: ["*"],
        description="comma-separated origins allowed by CORS; `*`: any (no credentials are ever allowed)",
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="largest request body accepted")
    max_connections_per_client: int = Field(
        default=256,
        ge=1,
        description="TCP connections one client address (an IPv6 client: its /64) may hold open at once on one "
        "gateway process (trusted proxies are not counted); one more is answered 429 and closed",
    )
    ws_send_queue: int = Field(
        default=256, ge=1, description="frames queued per WebSocket client before it is dropped (4008) as too slow"
    )
    ws_heartbeat_seconds: float = Field(default=20.0, gt=0, description="WebSocket protocol-level ping interval")
    ws_max_connections_per_client: int = Field(
        default=20,
        ge=1,
        description="WebSocket connections one user (valid token) or client IP (anonymous) may hold open at once "
        "on one gateway process; one more is refused with 429",
    )

    # --- accounts (client.md section 1, decisions 4-8) -------------------------------------------
    signup_mode: Literal["open", "invite", "closed"] = Field(
        default="open", description="`open` (anyone signs up), `invite` (an invite code is needed) or `closed`"
    )
    token_lifetime_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="lifetime of the tokens the gateway issues at sign-in"
    )
    auth_rate_limit_per_minute: int = Field(
        default=10,
        ge=1,
        description="sign-in, sign-up and password-reset requests per client IP per minute (against guessing)",
    )
    smtp_url: str | None = Field(
        default=None,
        description="SMTP server of the password-reset mail: `smtp://[user:password@]host[:port]` "
        "(STARTTLS when offered) or `smtps://...` (TLS); unset: password reset is off",
    )
    mail_from: str = Field(default="screener@localhost", description="sender address of the password-reset mail")
    frontend_origin: str = Field(
        default="http://localhost:3000",
        description="origin of the web client; the reset mail links to `<origin>/reset-password?token=...`",
    )

    # --- billing through Whop (client.md section 4, decisions 6 and 7) ---------------------------
    whop_api_key: SecretStr | None = Field(
        default=None,
        description="Whop company API key (sent as `Authorization: Bearer`); unset, with every other `WHOP_` "
        "setting unset: billing is off (every user is active, plans are set with `screener users set-plan`)",
    )
    whop_webhook_secret: SecretStr | None = Field(
        default=None,
        description="signing secret of the Whop webhook (`ws_...`) that calls `POST /api/billing/webhook`; "
        "required with billing",
    )
    whop_api_url: str = Field(
        default="https://api.whop.com/api/v1",
        description="Whop API base URL (the sandbox is `https://sandbox-api.whop.com/api/v1`); an address that "
        "is not public must be allowed in `SCREENER_OUTBOUND_ALLOW`",
    )
    whop_plan_screener_monthly: str | None = Field(
        default=None, pattern=_WHOP_PLAN_ID, description="Whop plan id (`plan_...`) sold as `screener_monthly`"
    )
    whop_plan_screener_yearly: str | None = Field(
        default=None, pattern=_WHOP_PLAN_ID, description="Whop plan id sold as `screener_yearly`"
    )
    whop_plan_bundle_monthly: str | None = Field(
        default=None,
        pattern=_WHOP_PLAN_ID,
        description="Whop plan id sold as `bundle_monthly` (screener and TradingView add-on)",
    )
    whop_plan_bundle_yearly: str | None = Field(
        default=None, pattern=_WHOP_PLAN_ID, description="Whop plan id sold as `bundle_yearly`"
    )
    whop_plan_tv_monthly: str | None = Field(
        default=None,
        pattern=_WHOP_PLAN_ID,
        description="Whop plan id sold as `tv_monthly` (the TradingView add-on alone)",
    )
    whop_plan_tv_yearly: str | None = Field(
        default=None, pattern=_WHOP_PLAN_ID, description="Whop plan id sold as `tv_yearly`"
    )
    whop_return_url: str | None = Field(
        default=None,
        description="where Whop sends the buyer back; the gateway adds `?session=<reference>`; "
        "unset: `<SCREENER_FRONTEND_ORIGIN>/billing`",
    )
    whop_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="timeout of one call to Whop's API (checkout, confirm, webhooks)"
    )
    trial_days: int = Field(
        default=7, ge=1, le=365, description="with billing: length of the trial of an invited (and open) sign-up"
    )
    open_signup_trial: bool = Field(
        default=True,
        description="with billing: an open sign-up starts a trial (`false`: it starts expired and must buy a plan)",
    )

    @model_validator(mode="after")
    def _billing_complete(self) -> Settings:
        """Refuse a half-configured billing: once any Whop setting is given, every required one is."""
        required = {"whop_api_key": self.whop_api_key, "whop_webhook_secret": self.whop_webhook_secret}
        required |= {f"whop_plan_{slug}": getattr(self, f"whop_plan_{slug}") for slug in PLAN_SLUGS}
        given = [name for name, value in required.items() if value is not None]
        given += [name for name in ("whop_return_url",) if getattr(self, name) is not None]
        if not given:
            return self
        missing = [ENV_PREFIX + name.upper() for name, value in required.items() if value is None]
        if missing:
            raise ValueError(f"billing is half configured: {', '.join(missing)} not set")
        blank = [
            ENV_PREFIX + name.upper()
            for name, secret in (("whop_api_key", self.whop_api_key), ("whop_webhook_secret", self.whop_webhook_secret))
            if secret is not None
            and (not secret.get_secret_value() or any(c.isspace() for c in secret.get_secret_value()))
        ]
        if blank:
            raise ValueError(f"{', '.join(blank)}: must be a non-empty value without spaces")
        for name in ("whop_api_url", "whop_return_url"):
            value = getattr(self, name)
            if value is not None and not _http_url(value):
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: must be an http(s) URL with a host")
        return self

    @property
    def billing_enabled(self) -> bool:
        """Return whether a billing provider (Whop) is configured."""
        return self.whop_api_key is not None

    @property
    def whop_plans(self) -> dict[str, str]:
        """Return the Whop plan id of each plan slug (empty without billing)."""
        plans = {slug: getattr(self, f"whop_plan_{slug}") for slug in PLAN_SLUGS}
        return {slug: plan for slug, plan in plans.items() if plan is not None}

    # --- rules -------------------------------------------------------------------------------------
    user_alerts_per_minute: int = Field(
        default=500,
        ge=1,
        description="alerts one user's own rules may raise per minute, all symbols together (shipped rules have "
        "no cap); the rest are dropped, logged and counted",
    )

    # --- notifier ----------------------------------------------------------------------------------
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, description="timeout of one webhook attempt")
    webhook_rate_per_minute: int = Field(default=30, ge=1, description="deliveries per webhook per minute")
    outbound_allow: CsvList = Field(
        default_factory=list,
        description="comma-separated CIDRs or host names a webhook URL may reach although they are not public "
        "(loopback, private, link-local, metadata); empty: public addresses only",
    )

    # --- observability -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    otel_exporter: Literal["none", "otlp", "console"] = Field(
        default="none", description="`none`, `otlp` (OTLP/HTTP) or `console`"
    )
    otel_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint (default: the exporter's, `http://localhost:4318/v1/traces`)",
    )
    service_name: str = Field(default="screener", description="OpenTelemetry service name prefix")

    @property
    def warmup_minutes(self) -> int:
        """Return the replay's warm-up: ``replay_warmup_minutes``, else the recording's own (14 days by default)."""
        if self.replay_warmup_minutes is not None:
            return self.replay_warmup_minutes
        return RECORDING_WARMUP_MINUTES.get(self.replay_recording, WARMUP_14_DAYS)

    @property
    def replay_recording(self) -> str:
        """Return the name of the replayed recording (its folder or file name)."""
        path = self.replay_data
        if path is None:
            return DEFAULT_REPLAY_RECORDING
        return path.name.removesuffix(".gz").removesuffix(".csv") if path.suffix else path.name


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in value)


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
        # A field's error names its variable; a whole-model check (billing) names them in its message.
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid setting(s): {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return load_settings()
