-- Two writers creating the same day partition at the same instant (two recorder workers, the replay
-- warm-up) made one of them fail with a duplicate table even with IF NOT EXISTS: serialise creation
-- per parent table with a transaction-scoped advisory lock. TimescaleDB's variant stays a no-op.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE OR REPLACE FUNCTION screener_ensure_partitions(parent text, first_day date, last_day date)
        RETURNS void AS $body$
        DECLARE
            day date := first_day;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('screener_partitions:' || parent));
            WHILE day <= last_day LOOP
                EXECUTE format(
                    'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    parent || '_' || to_char(day, 'YYYYMMDD'), parent,
                    (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
                day := day + 1;
            END LOOP;
        END;
        $body$ LANGUAGE plpgsql;
    END IF;
END;
$$;
