// The candle chart: klines of one symbol and interval, alert markers with labels that never pile up,
// a legend for the bar under the cursor, and times in the page's chosen zone (time.js).

import { fmtPrice, fmtVol } from "./format.js";
import { chartTimeOptions, clock, day, isToday, zoneLabel } from "./time.js";

/**
 * The intervals the page offers: the bar length, how many klines to ask for (room to scroll back) and
 * how many bars to show at first (a readable span: 2 h of 1m bars, 12 h of 5m, a day of 15m, ...).
 */
export const INTERVALS = {
  "1m": { seconds: 60, limit: 1000, visible: 120 },
  "5m": { seconds: 300, limit: 600, visible: 144 },
  "15m": { seconds: 900, limit: 480, visible: 96 },
  "1h": { seconds: 3600, limit: 500, visible: 120 },
  "4h": { seconds: 14400, limit: 360, visible: 90 },
  "1d": { seconds: 86400, limit: 365, visible: 90 },
};
// Below this many pixels per bar candles turn into lines: a narrow chart shows fewer bars instead.
const MIN_BAR_PX = 4;
// Marker labels are drawn in the chart's 11 px font; this is a generous average glyph width.
const LABEL_CHAR_PX = 6.5;
const LABEL_GAP_PX = 8;
const COLORS = { bull: "#16c784", bear: "#ea3943", neutral: "#f0b90b" };
const SHAPES = { bull: "arrowUp", bear: "arrowDown", neutral: "circle" };

/** Return the klines request for ``symbol`` at ``interval`` (GET /api/klines, Binance's row format). */
export function klinesPath(symbol, interval) {
  const spec = INTERVALS[interval];
  return `/api/klines?symbol=${encodeURIComponent(symbol)}&interval=${interval}&limit=${spec.limit}`;
}

function precisionFor(price) {
  if (!price || price >= 1000) return 2;
  return Math.min(10, Math.max(2, 4 - Math.floor(Math.log10(price))));
}

/** A candlestick chart with volume, alert markers and a legend, in ``box`` (which holds ``.chart``). */
export class CandleChart {
  constructor(box) {
    this.box = box;
    this.container = box.querySelector(".chart");
    this.legend = box.querySelector(".chart-legend");
    this.chart = null;
    this.interval = "5m";
    this.bars = [];
    this.volumeByTime = new Map();
    this.alerts = [];
    this.placing = false;
  }

  /** Create the chart once the vendor library is there; return whether it exists. */
  ensure() {
    if (this.chart) return true;
    if (!window.LightweightCharts) return false;
    const base = {
      autoSize: true,
      layout: { background: { type: "solid", color: "#111621" }, textColor: "#8a94a6", fontSize: 11 },
      grid: { vertLines: { color: "#182030" }, horzLines: { color: "#182030" } },
      rightPriceScale: { borderColor: "#1f2736" },
      timeScale: { borderColor: "#1f2736", timeVisible: true, secondsVisible: false },
      crosshair: { mode: LightweightCharts.CrosshairMode.Normal },
    };
    const zoned = chartTimeOptions();
    this.chart = LightweightCharts.createChart(this.container, {
      ...base, localization: zoned.localization, timeScale: { ...base.timeScale, ...zoned.timeScale },
    });
    this.candles = this.chart.addCandlestickSeries({
      upColor: "#16c784", downColor: "#ea3943", borderVisible: false, wickUpColor: "#16c784", wickDownColor: "#ea3943",
    });
    this.volumes = this.chart.addHistogramSeries({ priceScaleId: "", priceFormat: { type: "volume" }, color: "#2a3550" });
    this.volumes.priceScale().applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
    this.chart.timeScale().subscribeVisibleLogicalRangeChange(() => this.schedulePlacing());
    this.chart.subscribeCrosshairMove((param) => {
      const bar = param.time !== undefined ? param.seriesData.get(this.candles) : null;
      this.showLegend(bar || this.bars[this.bars.length - 1]);
    });
    return true;
  }

  /** Show klines ``rows`` (Binance arrays) of ``interval``; a fresh view starts at the interval's span. */
  setBars(rows, interval, keepView) {
    this.interval = interval;
    this.box.dataset.interval = interval;
    this.bars = rows.map((k) => ({ time: k[0] / 1000, open: +k[1], high: +k[2], low: +k[3], close: +k[4] }));
    this.volumeByTime = new Map(rows.map((k) => [k[0] / 1000, +k[7]]));
    const vols = rows.map((k) => ({
      time: k[0] / 1000, value: +k[7], color: +k[4] >= +k[1] ? "rgba(22,199,132,.35)" : "rgba(234,57,67,.35)",
    }));
    const last = this.bars[this.bars.length - 1];
    const precision = precisionFor(last ? last.close : 0);
    this.candles.applyOptions({ priceFormat: { type: "price", precision, minMove: Math.pow(10, -precision) } });
    this.candles.setData(this.bars);
    this.volumes.setData(vols);
    if (!keepView) this.showDefaultRange();
    this.showLegend(last);
    this.placeMarkers();
  }

  // The interval's default span ending at the newest bar, no denser than MIN_BAR_PX per bar, a little room on the
  // right. A short history keeps the span's bar width and leaves the left empty rather than blowing candles up.
  showDefaultRange() {
    const n = this.bars.length;
    if (!n) return;
    const timeScale = this.chart.timeScale();
    const width = timeScale.width() || Math.max(0, this.container.clientWidth - 70);
    const slots = Math.max(1, Math.min(INTERVALS[this.interval].visible, Math.floor(width / MIN_BAR_PX)));
    timeScale.setVisibleLogicalRange({ from: n - slots - 0.5, to: n - 0.5 + 3 });
  }

  /** Set the alerts to mark: [{timestamp (ISO), name, direction ("bull" | "bear" | "neutral")}]. */
  setAlerts(alerts) {
    this.alerts = alerts;
    this.placeMarkers();
  }

  /** Apply the page's time zone to the axis, the crosshair label and the legend. */
  applyTimeZone() {
    if (!this.chart) return;
    const zoned = chartTimeOptions();
    this.chart.applyOptions({ localization: zoned.localization, timeScale: zoned.timeScale });
    this.showLegend(this.bars[this.bars.length - 1]);
  }

  schedulePlacing() {
    if (this.placing) return;
    this.placing = true;
    requestAnimationFrame(() => { this.placing = false; this.placeMarkers(); });
  }

  // One marker per bar and side, named after its first alert ("Top Raid +2" for three); labels are kept from
  // the newest back only where they fit inside the plot and beside the previous kept label, the other markers
  // keep their arrow.
  placeMarkers() {
    if (!this.chart || !this.bars.length) return;
    const step = INTERVALS[this.interval].seconds;
    const first = this.bars[0].time;
    const last = this.bars[this.bars.length - 1].time;
    const groups = new Map();
    for (const alert of this.alerts) {
      const open = Date.parse(alert.timestamp) / 1000 - 60; // an alert's timestamp is its minute's close
      const time = Math.floor(open / step) * step;
      if (time < first || time > last) continue;
      const position = alert.direction === "bear" ? "aboveBar" : "belowBar";
      const key = `${time}|${position}`;
      if (!groups.has(key)) groups.set(key, { time, position, direction: alert.direction, names: [] });
      groups.get(key).names.push(alert.name);
    }
    const markers = [...groups.values()].sort((a, b) => a.time - b.time).map((g) => ({
      time: g.time,
      position: g.position,
      color: COLORS[g.direction] || COLORS.neutral,
      shape: SHAPES[g.direction] || SHAPES.neutral,
      label: g.names.length > 1 ? `${g.names[0]} +${g.names.length - 1}` : g.names[0],
      text: "",
    }));
    const timeScale = this.chart.timeScale();
    const plotWidth = timeScale.width();
    const kept = { aboveBar: null, belowBar: null }; // the last kept label per side: {x, width}
    let labelled = 0;
    for (let i = markers.length - 1; i >= 0; i--) {
      const marker = markers[i];
      const x = timeScale.timeToCoordinate(marker.time);
      if (x === null) continue;
      const width = marker.label.length * LABEL_CHAR_PX;
      if (x - width / 2 < 0 || x + width / 2 > plotWidth) continue; // a label cut by the price scale or the edge
      const previous = kept[marker.position];
      if (previous && previous.x - x < (previous.width + width) / 2 + LABEL_GAP_PX) continue;
      marker.text = marker.label;
      kept[marker.position] = { x, width };
      labelled += 1;
    }
    this.candles.setMarkers(markers.map(({ label, ...marker }) => marker));
    this.box.dataset.markers = String(markers.length);
    this.box.dataset.labels = String(labelled);
    const range = timeScale.getVisibleLogicalRange();
    if (range) {
      const from = Math.max(0, Math.ceil(range.from));
      const to = Math.min(this.bars.length - 1, Math.floor(range.to));
      this.box.dataset.visibleBars = String(Math.max(0, to - from + 1));
    }
  }

  showLegend(bar) {
    if (!this.legend) return;
    if (!bar) { this.legend.textContent = ""; return; }
    const ms = bar.time * 1000;
    const stamp = `${isToday(ms) ? "" : day(ms) + " "}${clock(ms)} ${zoneLabel()}`;
    const volume = this.volumeByTime.get(bar.time);
    const cls = bar.close >= bar.open ? "up" : "down";
    this.legend.innerHTML = `<span class="legend-time">${stamp}</span> ` +
      `<span class="${cls}">O ${fmtPrice(bar.open)} H ${fmtPrice(bar.high)} L ${fmtPrice(bar.low)} C ${fmtPrice(bar.close)}</span>` +
      (volume === undefined ? "" : ` <span class="muted">Vol ${fmtVol(volume)} USDT</span>`);
  }
}
