"""The collector: turn an exchange's klines (live Binance or a replay of recorded ones) into candle events."""
