// Number and text formatting shared by the table, the alert feed and the chart.

/** Return a price with a precision that suits its size ("—" when missing). */
export function fmtPrice(p) {
  if (p === null || p === undefined || !isFinite(p)) return "—";
  if (p >= 1000) return p.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  if (p >= 1) return p.toFixed(4);
  return p.toPrecision(4);
}

/** Return a signed percentage as text: "+1.42%". */
export function fmtPctText(v) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  return `${v > 0 ? "+" : ""}${v.toFixed(2)}%`;
}

/** Return the CSS class of a signed value: "up", "down" or "". */
export function sign(v) {
  return v > 0 ? "up" : v < 0 ? "down" : "";
}

/** Return a signed percentage as a coloured pill (HTML). */
export function fmtPct(v) {
  if (v === null || v === undefined || !isFinite(v)) return '<span class="muted">—</span>';
  return `<span class="pill ${sign(v)}">${fmtPctText(v)}</span>`;
}

/** Return a volume in K/M/B: "1.83M". */
export function fmtVol(v) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  const units = [[1e9, "B"], [1e6, "M"], [1e3, "K"]];
  for (const [size, unit] of units) if (Math.abs(v) >= size) return (v / size).toFixed(2) + unit;
  return v.toFixed(0);
}

/** Return ``text`` safe to put into HTML. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** Return the base asset of a USD-M pair: "BTCUSDT" -> "BTC". */
export function baseAsset(symbol) {
  return String(symbol).replace(/(USDT|USDC|FDUSD|BUSD)$/, "");
}
