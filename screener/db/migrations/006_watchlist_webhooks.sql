-- The product's web client (client.md, sections 2, 3 and 5): watchlists, webhooks in the client's
-- shape, and the TradingView username. Keyed by the token's `sub`, like every per-user table.

-- Entries are stored verbatim as the client sends them (base assets such as `BTC`); a webhook of
-- scope `watchlist` matches an alert on BTCUSDT against `BTC`.
CREATE TABLE IF NOT EXISTS watchlist (
    user_id    text NOT NULL,
    symbol     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, symbol)
);
-- The notifier looks entries up by their upper-case form.
CREATE INDEX IF NOT EXISTS watchlist_user_upper_idx ON watchlist (user_id, upper(symbol));

CREATE TABLE IF NOT EXISTS tv_usernames (
    user_id     text PRIMARY KEY,
    tv_username text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Webhook types of the client: the signed JSON kind is called `http`, and Slack joins.
ALTER TABLE webhooks DROP CONSTRAINT IF EXISTS webhooks_kind_check;
UPDATE webhooks SET kind = 'http' WHERE kind = 'json';
ALTER TABLE webhooks ADD CONSTRAINT webhooks_kind_check CHECK (kind IN ('discord', 'telegram', 'slack', 'http'));
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS name text NOT NULL DEFAULT '';
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT 'all' CHECK (scope IN ('all', 'watchlist'));
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS config jsonb NOT NULL DEFAULT '{}'::jsonb;

DROP TRIGGER IF EXISTS webhooks_changed ON webhooks;
CREATE TRIGGER webhooks_changed
    AFTER INSERT OR DELETE OR UPDATE OF user_id, kind, url, secret, chat_id, enabled, rule_types, symbols, scope
    ON webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION screener_notify_rules_changed();

-- The time shift of a replay that looks live (SCREENER_REPLAY_TIME=live), chosen once per database:
-- a restarted replay keeps it, so its candles, warm-up rows and alerts stay on one timeline.
CREATE TABLE IF NOT EXISTS replay_anchors (
    recording  text PRIMARY KEY,        -- recording name and its first recorded minute
    shift_ms   bigint NOT NULL CHECK (shift_ms % 60000 = 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
