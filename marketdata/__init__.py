"""Recorded market data: Binance kline files read into columns, for the replay collector and the backtest."""
