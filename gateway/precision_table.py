"""Decimals of the recorded symbols' prices and quantities (tick size, step size).

Generated from data/klines by ``python -m gateway.precision --write gateway/precision_table.py``;
do not edit by hand.
"""

# symbol: (price decimals, quantity decimals)
PRECISION: dict[str, tuple[int, int]] = {
    "ADAUSDT": (4, 0),
    "ALGOUSDT": (4, 1),
    "AVAXUSDT": (3, 0),
    "BCHUSDT": (2, 3),
    "BNBUSDT": (2, 2),
    "BTCUSDT": (1, 3),
    "DOTUSDT": (3, 1),
    "ENAUSDT": (4, 0),
    "ETCUSDT": (3, 2),
    "ETHUSDT": (2, 3),
    "FILUSDT": (3, 1),
    "LAYERUSDT": (4, 1),
    "LINKUSDT": (3, 2),
    "LTCUSDT": (2, 3),
    "NEARUSDT": (3, 0),
    "SOLUSDT": (2, 2),
    "SUIUSDT": (4, 1),
    "XLMUSDT": (5, 0),
    "XMRUSDT": (2, 3),
    "XRPUSDT": (4, 1),
}
