-- Time-series tables as TimescaleDB hypertables (used where the extension is available).
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS candles_1m (
    symbol                 text NOT NULL,
    open_time              timestamptz NOT NULL,
    open                   double precision NOT NULL,
    high                   double precision NOT NULL,
    low                    double precision NOT NULL,
    close                  double precision NOT NULL,
    volume                 double precision NOT NULL,
    quote_volume           double precision NOT NULL,
    trades                 bigint NOT NULL DEFAULT 0,
    taker_buy_volume       double precision NOT NULL DEFAULT 0,
    taker_buy_quote_volume double precision NOT NULL DEFAULT 0,
    quote_volume_derived   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (symbol, open_time)
);
SELECT create_hypertable('candles_1m', 'open_time', chunk_time_interval => interval '1 day', if_not_exists => true);

CREATE TABLE IF NOT EXISTS metrics_snapshots (
    symbol      text NOT NULL,
    minute      timestamptz NOT NULL,
    last_price  double precision NOT NULL,
    data        jsonb NOT NULL,
    PRIMARY KEY (symbol, minute)
);
SELECT create_hypertable('metrics_snapshots', 'minute', chunk_time_interval => interval '1 day', if_not_exists => true);

CREATE TABLE IF NOT EXISTS alert_history (
    id          uuid NOT NULL,
    rule_type   text NOT NULL,
    symbol      text NOT NULL,
    minute      timestamptz NOT NULL,
    ts          timestamptz NOT NULL,
    price       double precision NOT NULL,
    description text NOT NULL DEFAULT '',
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    audience    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, minute)
);
SELECT create_hypertable('alert_history', 'minute', chunk_time_interval => interval '1 day', if_not_exists => true);
CREATE INDEX IF NOT EXISTS alert_history_symbol_idx ON alert_history (symbol, minute DESC);
CREATE INDEX IF NOT EXISTS alert_history_rule_idx ON alert_history (rule_type, minute DESC);
CREATE INDEX IF NOT EXISTS alert_history_id_idx ON alert_history (id);

-- Partition helpers are no-ops here: TimescaleDB makes chunks itself and retention policies drop them.
CREATE OR REPLACE FUNCTION screener_ensure_partitions(parent text, first_day date, last_day date)
RETURNS void AS $$ BEGIN END; $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION screener_drop_partitions_before(parent text, horizon timestamptz)
RETURNS integer AS $$
DECLARE dropped integer;
BEGIN
    SELECT count(*) INTO dropped FROM drop_chunks(parent::regclass, older_than => horizon);
    RETURN dropped;
END;
$$ LANGUAGE plpgsql;
