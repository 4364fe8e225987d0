-- Where each function stands in each symbol's stream, durably (screener.runtime.sequence): Redis
-- keeps the positions for speed, and loses them when it restarts without persistence. The rules
-- recover theirs from here, so a flushed Redis neither re-fires nor skips a minute.
CREATE TABLE IF NOT EXISTS stream_positions (
    function text NOT NULL,
    symbol text NOT NULL,
    minute bigint NOT NULL,
    sequence bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function, symbol)
);
