"""The rules function: the rule language, rule evaluation, alert dedupe and persistence, backtests."""
