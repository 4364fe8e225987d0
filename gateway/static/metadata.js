// Names, units and a stable order for the metric values an alert carries in its metadata.
// Keys are the rule language's metric names (functions/rules/vocabulary.py, rules.md): "c5m", "v1h",
// "rsi15m", "c14d", "fib_pivot", ... and "BTCUSDT.c1h" for another symbol's metric.

import { baseAsset, fmtPctText, fmtPrice, fmtVol, sign } from "./format.js";

// The screener calls its rolling 1440-minute window "24h" (the table's column); bars stay "1d".
const WINDOW_NAMES = { "5m": "5m", "15m": "15m", "1h": "1h", "4h": "4h", "8h": "8h", "1d": "24h" };
const TIMEFRAMES = ["1m", "5m", "15m", "1h", "4h", "8h", "1d", "14d"];

// prefix -> [display order, label, unit, window (true) or clock-aligned bar (false)]
const KINDS = {
  c: [0, "change", "percent", true],
  v: [1, "volume", "usdt", true],
  vr: [2, "volume ratio", "ratio", true],
  bv: [3, "base volume", "base", true],
  rsi: [4, "RSI", "index", false],
  vcp: [5, "VCP", "number", true],
  vwap: [6, "VWAP", "price", true],
  open: [7, "open", "price", true],
  high: [8, "high", "price", true],
  low: [9, "low", "price", true],
  close: [10, "close", "price", true],
  macd: [11, "MACD", "number", false],
  macds: [12, "MACD signal", "number", false],
  macdh: [13, "MACD histogram", "number", false],
  bbu: [14, "Bollinger upper", "price", false],
  bbm: [15, "Bollinger middle", "price", false],
  bbl: [16, "Bollinger lower", "price", false],
  cov: [17, "coverage", "fraction", true],
};
const FIB_LEVELS = {
  r1: "R1", r618: "R 0.618", r382: "R 0.382", pivot: "pivot", s382: "S 0.382", s618: "S 0.618", s1: "S1",
};
const NAME_RE = new RegExp(`^(${Object.keys(KINDS).sort((a, b) => b.length - a.length).join("|")})(1m|5m|15m|1h|4h|8h|1d)$`);

// Return {order, label, unit} for a metric name of the evaluated symbol, or null for an unknown name.
function describeName(name) {
  if (name === "c14d") return { order: [0, 7], label: "14d change", unit: "percent" };
  if (name === "price") return { order: [18, 0], label: "last price", unit: "price" };
  const fib = /^fib_(\w+)$/.exec(name);
  if (fib && fib[1] in FIB_LEVELS) {
    return { order: [19, Object.keys(FIB_LEVELS).indexOf(fib[1])], label: `24h Fib ${FIB_LEVELS[fib[1]]}`, unit: "price" };
  }
  const match = NAME_RE.exec(name);
  if (!match) return null;
  const [rank, label, unit, isWindow] = KINDS[match[1]];
  const tf = match[2];
  const text = isWindow ? `${WINDOW_NAMES[tf]} ${label}` : `${label} ${tf}`;
  return { order: [rank, TIMEFRAMES.indexOf(tf)], label: text, unit };
}

function formatValue(value, unit, base) {
  if (value === null || value === undefined || !isFinite(value)) return { text: "n/a", cls: "muted" };
  switch (unit) {
    case "percent": return { text: fmtPctText(value), cls: sign(value) };
    case "usdt": return { text: `${fmtVol(value)} USDT`, cls: "" };
    case "base": return { text: `${fmtVol(value)} ${base}`, cls: "" };
    case "ratio": return { text: `${value.toFixed(2)}×`, cls: "" };
    case "index": return { text: value.toFixed(1), cls: "" };
    case "fraction": return { text: `${(value * 100).toFixed(0)}%`, cls: "" };
    case "price": return { text: `${fmtPrice(value)} USDT`, cls: "" };
    default: return { text: Math.abs(value) >= 1000 ? fmtVol(value) : value.toPrecision(4), cls: sign(value) };
  }
}

/**
 * Return an alert's metadata as [{key, label, text, cls}] in a stable order: changes, volumes, ratios,
 * RSI, then the rest; within a kind by timeframe, another symbol's value ("BTC 1h change") right after
 * the alert's own at the same timeframe. Unknown keys (a future metric) keep their name and come last.
 */
export function describeMetadata(metadata, symbol) {
  const items = [];
  for (const [key, value] of Object.entries(metadata || {})) {
    if (value !== null && typeof value !== "number") continue;
    const dot = key.lastIndexOf(".");
    const other = dot > 0 ? key.slice(0, dot) : null;
    const described = describeName(dot > 0 ? key.slice(dot + 1) : key);
    const owner = other || symbol;
    const base = baseAsset(owner);
    if (!described) {
      items.push({ key, label: key, order: [99, 0, 1, key], ...formatValue(value, "number", base) });
      continue;
    }
    const label = other ? `${base} ${described.label}` : described.label;
    items.push({ key, label, order: [...described.order, other ? 1 : 0, key], ...formatValue(value, described.unit, base) });
  }
  items.sort((a, b) => {
    for (let i = 0; i < 4; i++) {
      if (a.order[i] < b.order[i]) return -1;
      if (a.order[i] > b.order[i]) return 1;
    }
    return 0;
  });
  return items;
}
