-- Time-series tables as native range partitions by day (used where TimescaleDB is absent).
-- Partitions are created on demand by screener_ensure_partitions() and dropped by
-- screener_drop_partitions_before(): retention is a metadata operation, not a DELETE.

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
) PARTITION BY RANGE (open_time);

CREATE TABLE IF NOT EXISTS metrics_snapshots (
    symbol      text NOT NULL,
    minute      timestamptz NOT NULL,
    last_price  double precision NOT NULL,
    data        jsonb NOT NULL,
    PRIMARY KEY (symbol, minute)
) PARTITION BY RANGE (minute);

CREATE TABLE IF NOT EXISTS alert_history (
    id          uuid NOT NULL,
    rule_type   text NOT NULL,
    symbol      text NOT NULL,
    minute      timestamptz NOT NULL,          -- open time of the minute that fired
    ts          timestamptz NOT NULL,          -- that minute's close: the alert's timestamp
    price       double precision NOT NULL,
    description text NOT NULL DEFAULT '',
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    audience    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, minute)
) PARTITION BY RANGE (minute);
CREATE INDEX IF NOT EXISTS alert_history_minute_idx ON alert_history (minute DESC);
CREATE INDEX IF NOT EXISTS alert_history_symbol_idx ON alert_history (symbol, minute DESC);
CREATE INDEX IF NOT EXISTS alert_history_rule_idx ON alert_history (rule_type, minute DESC);
CREATE INDEX IF NOT EXISTS alert_history_id_idx ON alert_history (id);

CREATE OR REPLACE FUNCTION screener_ensure_partitions(parent text, first_day date, last_day date)
RETURNS void AS $$
DECLARE
    day date := first_day;
BEGIN
    WHILE day <= last_day LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            parent || '_' || to_char(day, 'YYYYMMDD'), parent,
            (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
        day := day + 1;
    END LOOP;
END;
$$ LANGUAGE plpgsql;

-- Drop every day partition of ``parent`` that ends at or before ``horizon``; return how many.
CREATE OR REPLACE FUNCTION screener_drop_partitions_before(parent text, horizon timestamptz)
RETURNS integer AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname AS name
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = parent AND c.relname ~ ('^' || parent || '_[0-9]{8}$')
    LOOP
        IF (to_date(right(part.name, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= horizon THEN
            EXECUTE format('DROP TABLE IF EXISTS %I', part.name);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END;
$$ LANGUAGE plpgsql;
