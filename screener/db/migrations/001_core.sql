-- Rules, users and webhooks: small tables that are never partitioned.

CREATE TABLE IF NOT EXISTS alert_rules (
    rule_type        text PRIMARY KEY,
    name             text NOT NULL,
    description      text NOT NULL DEFAULT '',
    category         text NOT NULL DEFAULT 'custom',
    expression       text NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,   -- the global switch: evaluated at all
    default_on       boolean NOT NULL DEFAULT true,   -- each user's initial personal setting
    frequency        text NOT NULL DEFAULT 'cooldown'
                     CHECK (frequency IN ('once_per_bar_close', 'cooldown', 'on_change')),
    cooldown_seconds integer NOT NULL DEFAULT 300 CHECK (cooldown_seconds >= 0),
    live             boolean NOT NULL DEFAULT false,
    min_coverage     double precision NOT NULL DEFAULT 1.0 CHECK (min_coverage BETWEEN 0 AND 1),
    owner            text,                            -- a user's own rule: runs only for that user
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_rules_owner_idx ON alert_rules (owner) WHERE owner IS NOT NULL;

CREATE TABLE IF NOT EXISTS user_settings (
    user_id     text PRIMARY KEY,
    rules       jsonb NOT NULL DEFAULT '{}'::jsonb,   -- {rule_type: enabled} overrides of the defaults
    preferences jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS webhooks (
    id            uuid PRIMARY KEY,
    user_id       text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('discord', 'telegram', 'json')),
    url           text NOT NULL,
    secret        text,                 -- HMAC key of 'json' webhooks
    chat_id       text,                 -- Telegram chat
    enabled       boolean NOT NULL DEFAULT true,
    rule_types    text[],               -- NULL: every rule the user has on
    symbols       text[],               -- NULL: every symbol
    failure_count integer NOT NULL DEFAULT 0,
    paused_until  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhooks_user_idx ON webhooks (user_id);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook_id  uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    alert_id    uuid NOT NULL,
    status      text NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    http_status integer,
    sent_at     timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, alert_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_alert_idx ON webhook_deliveries (alert_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_updated_idx ON webhook_deliveries (updated_at);

-- Seeded higher-timeframe bars (Binance native intervals), for indicators from the first minute.
CREATE TABLE IF NOT EXISTS bars (
    symbol       text NOT NULL,
    interval     text NOT NULL,
    open_time    timestamptz NOT NULL,
    open         double precision NOT NULL,
    high         double precision NOT NULL,
    low          double precision NOT NULL,
    close        double precision NOT NULL,
    volume       double precision NOT NULL,
    quote_volume double precision NOT NULL,
    PRIMARY KEY (symbol, interval, open_time)
);

-- Running rule workers and gateways LISTEN here and reload within seconds, without a restart.
CREATE OR REPLACE FUNCTION screener_notify_rules_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('screener_rules_changed', TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS alert_rules_changed ON alert_rules;
CREATE TRIGGER alert_rules_changed AFTER INSERT OR UPDATE OR DELETE ON alert_rules
    FOR EACH STATEMENT EXECUTE FUNCTION screener_notify_rules_changed();
DROP TRIGGER IF EXISTS user_settings_changed ON user_settings;
CREATE TRIGGER user_settings_changed AFTER INSERT OR UPDATE OR DELETE ON user_settings
    FOR EACH STATEMENT EXECUTE FUNCTION screener_notify_rules_changed();
DROP TRIGGER IF EXISTS webhooks_changed ON webhooks;
CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION screener_notify_rules_changed();
