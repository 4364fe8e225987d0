"""The recorder function: every closed candle lands in ``candles_1m`` exactly once."""
