"""The live source: Binance USD-M futures streams and REST (events.md, "Binance USD-M futures")."""
