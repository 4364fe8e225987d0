// The screener dashboard: alert feed, live screener table, candle chart with alert markers, rule switches.
// Plain JavaScript modules, no build step; talks to the gateway's REST API and WebSocket protocol v2.

import { CandleChart, klinesPath } from "./chart.js";
import { escapeHtml, fmtPct, fmtPrice, fmtVol } from "./format.js";
import { describeMetadata } from "./metadata.js";
import { clock, day, isToday, setTimeZone, timeZone, when, zoneLabel, zoneName } from "./time.js";

const TOKEN_KEY = "screener.token";
const EMAIL_KEY = "screener.email";
const LOCAL_RULES_KEY = "screener.localRules";
const MAX_FEED = 200;
const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  metrics: new Map(),        // symbol -> metrics object (api.md)
  rules: new Map(),          // rule_type -> rule object
  localRules: JSON.parse(localStorage.getItem(LOCAL_RULES_KEY) || "{}"),
  alerts: [],                // newest first
  alertsBySymbol: new Map(), // symbol -> [alert]
  selected: null,
  interval: "5m",
  sortKey: "c1d",
  sortAsc: false,
  filter: "",
  lastAlertId: null,
  ws: null,
  retry: 0,
  dirty: false,
  flashes: new Map(),
  source: null,              // /api/health's source: {kind, recording?, time?}
  updatedAt: 0,              // the newest metrics timestamp seen (epoch ms)
};

// ---------------------------------------------------------------- helpers
function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    // Errors are {"error": "<sentence>", "code", "message": "<detail>"} (client.md, decision 1).
    const message = body && typeof body.error === "string" ? body.error : response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

function direction(alert) {
  const t = alert.rule_type;
  if (/bull|bottom|accumulation|capitulation|knife/.test(t)) return "bull";
  if (/bear|top|distribution/.test(t)) return "bear";
  return "neutral";
}

function ruleName(ruleType) {
  const rule = state.rules.get(ruleType);
  return rule ? rule.name : ruleType;
}

function ruleEnabled(ruleType) {
  const rule = state.rules.get(ruleType);
  if (!rule) return true;
  if (state.token) return rule.enabled;
  return ruleType in state.localRules ? state.localRules[ruleType] : rule.enabled;
}

function row(symbol) {
  const m = state.metrics.get(symbol);
  const tf = (name) => (m && m.timeframes && m.timeframes[name]) || {};
  return {
    symbol,
    price: m ? m.last_price : null,
    c5m: tf("5m").price_change, c15m: tf("15m").price_change, c1h: tf("1h").price_change,
    c4h: tf("4h").price_change, c1d: tf("1d").price_change,
    v1h: tf("1h").volume, v1d: tf("1d").volume, rsi: tf("15m").rsi_14,
  };
}

// ---------------------------------------------------------------- screener table
function renderTable() {
  state.dirty = false;
  const body = $("screener-body");
  const filter = state.filter.toUpperCase();
  let rows = [...state.metrics.keys()].filter((s) => s.includes(filter)).map(row);
  const key = state.sortKey;
  rows.sort((a, b) => {
    const x = a[key], y = b[key];
    if (key === "symbol") return state.sortAsc ? x.localeCompare(y) : y.localeCompare(x);
    const nx = x === null || x === undefined ? -Infinity : x;
    const ny = y === null || y === undefined ? -Infinity : y;
    return state.sortAsc ? nx - ny : ny - nx;
  });
  if (!rows.length) {
    body.innerHTML = `<tr class="empty"><td colspan="10">${state.metrics.size ? "No symbol matches the filter" : "Waiting for metrics…"}</td></tr>`;
    return;
  }
  const html = rows.map((r) => {
    const flash = state.flashes.get(r.symbol);
    const cls = [r.symbol === state.selected ? "selected" : "", flash ? `flash-${flash}` : ""].join(" ");
    const dot = state.alertsBySymbol.has(r.symbol) ? '<span class="alert-dot" title="recent alert"></span>' : "";
    return `<tr data-symbol="${r.symbol}" class="${cls}">` +
      `<td class="left sym">${r.symbol}${dot}</td><td>${fmtPrice(r.price)}</td>` +
      `<td>${fmtPct(r.c5m)}</td><td>${fmtPct(r.c15m)}</td><td>${fmtPct(r.c1h)}</td><td>${fmtPct(r.c4h)}</td>` +
      `<td>${fmtPct(r.c1d)}</td><td>${fmtVol(r.v1h)}</td><td>${fmtVol(r.v1d)}</td>` +
      `<td>${r.rsi === null || r.rsi === undefined ? "—" : r.rsi.toFixed(1)}</td></tr>`;
  });
  body.innerHTML = html.join("");
  $("stat-symbols").textContent = `${state.metrics.size} symbols`;
  document.querySelectorAll("thead th").forEach((th) => {
    th.classList.toggle("sorted", th.dataset.sort === state.sortKey);
    th.classList.toggle("asc", th.dataset.sort === state.sortKey && state.sortAsc);
  });
}

function scheduleRender() {
  if (state.dirty) return;
  state.dirty = true;
  requestAnimationFrame(renderTable);
}

function showUpdated(timestamp) {
  const ms = Date.parse(timestamp);
  if (ms > state.updatedAt) state.updatedAt = ms;
  renderUpdated();
}

function renderUpdated() {
  if (state.updatedAt) $("stat-updated").textContent = `data as of ${when(state.updatedAt)} ${zoneLabel()}`;
}

function applyMetrics(m) {
  const before = state.metrics.get(m.symbol);
  if (before && before.last_price !== m.last_price) {
    state.flashes.set(m.symbol, m.last_price > before.last_price ? "up" : "down");
    setTimeout(() => { state.flashes.delete(m.symbol); scheduleRender(); }, 900);
  }
  state.metrics.set(m.symbol, m);
  showUpdated(m.timestamp);
  if (!state.selected) select(m.symbol);  // a page opened before the first metrics charts the first symbol
  if (m.symbol === state.selected) {
    updateChartPrice();
    refreshChartSoon();
  }
  scheduleRender();
}

// ---------------------------------------------------------------- alert feed
function metaHtml(alert) {
  const items = describeMetadata(alert.metadata, alert.symbol);
  if (!items.length) return escapeHtml(alert.description);
  return items.map((i) => `<span class="kv" data-key="${escapeHtml(i.key)}"><span class="k">${escapeHtml(i.label)}</span> ` +
    `<span class="v ${i.cls}">${escapeHtml(i.text)}</span></span>`).join("");
}

function alertHtml(alert, fresh) {
  const ms = Date.parse(alert.timestamp);
  const date = isToday(ms) ? "" : `<span class="date">${day(ms)}</span>`;
  return `<li class="alert-item ${direction(alert)}${fresh ? " fresh" : ""}" data-id="${escapeHtml(alert.id)}" ` +
    `data-symbol="${escapeHtml(alert.symbol)}" title="${escapeHtml(alert.description)}">` +
    `<span class="time"><span class="clock">${clock(ms)}</span>${date}</span>` +
    `<span class="title"><span class="symbol">${escapeHtml(alert.symbol)}</span><span class="rule-name">${escapeHtml(ruleName(alert.rule_type))}</span></span>` +
    `<span class="price">${fmtPrice(alert.price)}</span>` +
    `<span class="meta">${metaHtml(alert)}</span></li>`;
}

function renderFeed() {
  const visible = state.alerts.filter((a) => ruleEnabled(a.rule_type));
  $("alert-feed").innerHTML = visible.length ? visible.map((a) => alertHtml(a, false)).join("") :
    '<li class="empty">No alerts yet — they appear here the moment a rule fires.</li>';
  renderHidden();
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// Counts never hide anything silently: the header and the feed say how many alerts the rules switched off hold back.
function renderHidden() {
  const off = [...state.rules.values()].filter((r) => !ruleEnabled(r.rule_type));
  const hidden = state.alerts.filter((a) => !ruleEnabled(a.rule_type)).length;
  const stat = $("stat-alerts");
  stat.textContent = `${plural(state.alerts.length - hidden, "alert")}` + (hidden ? ` · ${hidden} hidden` : "");
  stat.title = hidden ? `${plural(hidden, "alert")} of rules you switched off are not shown` : "alerts shown in the feed";
  const box = $("feed-hidden");
  box.hidden = off.length === 0;
  if (!off.length) return;
  $("feed-hidden-summary").textContent = plural(off.length, "rule") + " off" + (hidden ? ` · ${plural(hidden, "alert")} hidden` : "");
  const names = off.map((r) => `${r.name}${r.default_on === false ? " (off by default)" : ""}`).join(", ");
  let text = `Not shown in this feed or on the chart: alerts of ${names}. Switch a rule on under Rules to see them.`;
  const localOnly = [...state.rules.values()].filter((r) => !state.token && r.default_on === false && ruleEnabled(r.rule_type));
  if (localOnly.length) {
    text += ` ${localOnly.map((r) => r.name).join(", ")}: rules that are off by default reach the live feed only ` +
      "when you sign in; until then their alerts appear when the page loads.";
  }
  $("feed-hidden-detail").textContent = text;
}

function remember(alert) {
  if (state.alerts.some((a) => a.id === alert.id)) return false;
  state.alerts.unshift(alert);
  state.alerts.sort((a, b) => (a.timestamp < b.timestamp ? 1 : a.timestamp > b.timestamp ? -1 : 0));
  if (state.alerts.length > MAX_FEED) state.alerts.length = MAX_FEED;
  const list = state.alertsBySymbol.get(alert.symbol) || [];
  list.push(alert);
  state.alertsBySymbol.set(alert.symbol, list);
  return true;
}

function onAlert(alert) {
  if (!remember(alert)) return;
  state.lastAlertId = alert.id;
  const feed = $("alert-feed");
  if (ruleEnabled(alert.rule_type)) {
    const empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    feed.insertAdjacentHTML("afterbegin", alertHtml(alert, true));
    while (feed.children.length > MAX_FEED) feed.lastElementChild.remove();
  }
  renderHidden();
  if (alert.symbol === state.selected) setMarkers();
  scheduleRender();
}

// ---------------------------------------------------------------- rules
function renderRules() {
  const groups = new Map();
  for (const rule of state.rules.values()) {
    const key = rule.custom ? "custom" : rule.category;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(rule);
  }
  const order = ["original", "optimized", "whale", "v4", "custom"];
  const keys = [...groups.keys()].sort((a, b) => (order.indexOf(a) + 99) % 99 - (order.indexOf(b) + 99) % 99);
  $("rules").innerHTML = keys.map((key) => `<div class="rule-group"><h4>${escapeHtml(key)}</h4>` +
    groups.get(key).map((r) => `<label class="rule" title="${escapeHtml(r.expression)}">` +
      `<span class="name">${escapeHtml(r.name)}${r.default_on === false ? ' <span class="tag">off by default</span>' : ""}` +
      `<span class="desc">${escapeHtml(r.description || r.rule_type)}</span></span>` +
      `<span class="switch"><input type="checkbox" data-rule="${escapeHtml(r.rule_type)}" ${ruleEnabled(r.rule_type) ? "checked" : ""}><span></span></span>` +
      `</label>`).join("") + "</div>").join("");
  $("rules-note").textContent = state.token ? "synced to your account" : "local to this browser · sign in to sync";
}

async function toggleRule(ruleType, enabled) {
  if (state.token) {
    try {
      await api(`/api/alert-rules/${encodeURIComponent(ruleType)}`, {
        method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ enabled }),
      });
      state.rules.get(ruleType).enabled = enabled;
    } catch (error) {
      $("rules-note").textContent = `could not save: ${error.message}`;
      renderRules();
      return;
    }
  } else {
    state.localRules[ruleType] = enabled;
    localStorage.setItem(LOCAL_RULES_KEY, JSON.stringify(state.localRules));
  }
  renderFeed();
  setMarkers();
}

// ---------------------------------------------------------------- chart
const chart = new CandleChart($("chart-box"));
let chartRequest = 0;

function setMarkers() {
  if (!state.selected) return;
  chart.setAlerts((state.alertsBySymbol.get(state.selected) || [])
    .filter((a) => ruleEnabled(a.rule_type))
    .map((a) => ({ timestamp: a.timestamp, name: ruleName(a.rule_type), direction: direction(a) })));
}

function updateChartPrice() {
  const m = state.metrics.get(state.selected);
  const el = $("chart-price");
  if (!m) { el.innerHTML = ""; return; }
  const change = m.timeframes["1d"] ? m.timeframes["1d"].price_change : null;
  el.innerHTML = `${fmtPrice(m.last_price)} ${fmtPct(change)}`;
}

async function loadChart(keepView = false) {
  if (!chart.ensure() || !state.selected) return;
  const request = ++chartRequest;
  const interval = state.interval;
  $("chart-title").textContent = state.selected;
  updateChartPrice();
  try {
    const rows = await api(klinesPath(state.selected, interval));
    if (request !== chartRequest) return;
    chart.setBars(rows, interval, keepView);
    await loadSymbolAlerts(state.selected);
    if (request !== chartRequest) return;
    setMarkers();
  } catch (error) {
    $("chart-title").textContent = `${state.selected} · ${error.message}`;
  }
}

async function loadSymbolAlerts(symbol) {
  const rows = await api(`/api/alerts?symbol=${symbol}&limit=200`);
  const known = new Set((state.alertsBySymbol.get(symbol) || []).map((a) => a.id));
  const list = state.alertsBySymbol.get(symbol) || [];
  for (const a of rows) if (!known.has(a.id)) list.push(a);
  if (list.length) state.alertsBySymbol.set(symbol, list);
}

// A new minute of the charted symbol: reload its candles, at most every few seconds.
let chartRefresh = null;
function refreshChartSoon() {
  if (chartRefresh) return;
  chartRefresh = setTimeout(() => { chartRefresh = null; loadChart(true); }, 3000);
}

function select(symbol) {
  if (!symbol || symbol === state.selected) return;
  state.selected = symbol;
  history.replaceState(null, "", `#${symbol}`);
  scheduleRender();
  loadChart();
}

// ---------------------------------------------------------------- time zone
// One convention for every time on the page (time.js): the header, the feed, the chart's axis and legend.
function renderTimes() {
  const button = $("tz");
  const other = timeZone() === "utc" ? "your local time" : "UTC";
  button.textContent = zoneLabel();
  button.dataset.zone = timeZone();
  button.title = `Times are shown in ${zoneName()}; click for ${other}`;
  renderUpdated();
  chart.applyTimeZone();
}

// "Today" moves at midnight of the chosen zone: a page left open re-dates its times then.
let shownDay = day(Date.now());
setInterval(() => {
  if (day(Date.now()) === shownDay) return;
  shownDay = day(Date.now());
  renderUpdated();
  renderFeed();
}, 60_000);

function toggleTimeZone() {
  setTimeZone(timeZone() === "utc" ? "local" : "utc");
  shownDay = day(Date.now());
  renderTimes();
  renderFeed();
}

// ---------------------------------------------------------------- live connection
function setConn(kind, text) {
  const el = $("conn");
  el.className = `conn ${kind}`;
  el.dataset.state = kind;
  $("conn-text").textContent = text;
}

// A replay is never called plain "live": the label names the recording (from /api/health).
function liveLabel() {
  const source = state.source;
  if (!source || source.kind !== "replay") return "live";
  return source.time === "live" ? `replay of ${source.recording}, shifted to now` : `replay of ${source.recording}`;
}

async function loadSource() {
  try {
    state.source = (await api("/api/health")).source || null;
  } catch {
    state.source = null;
  }
  if (state.source && state.source.kind === "replay") {
    $("feed-title").textContent = `Alerts · replay of ${state.source.recording}`;
    if ($("conn").dataset.state === "live") setConn("live", liveLabel());
  }
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams({ protocol: "2" });
  if (state.token) params.set("token", state.token);
  if (state.lastAlertId) params.set("last_alert_id", state.lastAlertId);
  setConn("connecting", "connecting");
  const ws = new WebSocket(`${proto}://${location.host}/ws/alerts?${params}`);
  state.ws = ws;
  ws.onmessage = (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch { return; }
    if (msg.type === "hello") {
      ws.send(JSON.stringify({ type: "subscribe", metrics: true }));
    } else if (msg.type === "subscribed") {
      state.retry = 0;
      setConn("live", liveLabel());
    } else if (msg.type === "alert") {
      onAlert(msg.data);
    } else if (msg.type === "metrics") {
      applyMetrics(msg.data);
    } else if (msg.type === "resumed" && !msg.complete) {
      $("feed-note").textContent = "some alerts may be missing — reload for the full history";
    }
  };
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    setConn("connecting", event.code === 4008 ? "too slow, reconnecting" : "reconnecting");
    const delay = Math.min(15000, 500 * 2 ** state.retry++);
    setTimeout(connect, delay);
  };
  // The server pings at the protocol level; an app-level ping also keeps proxies from idling us out.
  const keepAlive = setInterval(() => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
    else if (ws.readyState === WebSocket.CLOSED) clearInterval(keepAlive);
  }, 10000);
}

// ---------------------------------------------------------------- start
async function loadRules() {
  try {
    const body = await api("/api/alert-rules");
    state.rules = new Map(body.rules.map((r) => [r.rule_type, r]));
  } catch (error) {
    if (state.token && /^401/.test(error.message)) {
      $("rules-note").textContent = "token refused — signed out";
      state.token = "";
      localStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(EMAIL_KEY);
      renderAccount();
      return loadRules();
    }
    $("rules-note").textContent = error.message;
  }
  renderRules();
}

async function start() {
  await Promise.all([loadRules(), loadSource()]);
  const [metrics, alerts] = await Promise.all([
    api("/api/metrics/").catch(() => []),
    api("/api/alerts?limit=100").catch(() => []),
  ]);
  for (const m of metrics) state.metrics.set(m.symbol, m);
  const newest = metrics.map((m) => m.timestamp).sort().pop();
  if (newest) showUpdated(newest);
  for (const a of alerts.slice().reverse()) remember(a);
  if (alerts.length) state.lastAlertId = alerts[0].id;
  renderFeed();
  renderTable();
  const wanted = location.hash.slice(1).toUpperCase();
  const first = state.metrics.has(wanted) ? wanted : [...state.metrics.keys()].sort()[0] || (alerts[0] && alerts[0].symbol);
  if (first) select(first);
  connect();
}

function wire() {
  $("filter").addEventListener("input", (e) => { state.filter = e.target.value.trim(); renderTable(); });
  document.querySelectorAll("thead th").forEach((th) => th.addEventListener("click", () => {
    const key = th.dataset.sort;
    if (state.sortKey === key) state.sortAsc = !state.sortAsc;
    else { state.sortKey = key; state.sortAsc = key === "symbol"; }
    renderTable();
  }));
  $("screener-body").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-symbol]");
    if (tr) select(tr.dataset.symbol);
  });
  $("alert-feed").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-symbol]");
    if (li) select(li.dataset.symbol);
  });
  $("rules").addEventListener("change", (e) => {
    if (e.target.dataset.rule) toggleRule(e.target.dataset.rule, e.target.checked);
  });
  $("intervals").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-interval]");
    if (!button) return;
    state.interval = button.dataset.interval;
    document.querySelectorAll("#intervals button").forEach((b) => b.classList.toggle("active", b === button));
    loadChart();
  });
  $("tz").addEventListener("click", toggleTimeZone);
  renderTimes();
  wireSignIn();
}

// ---------------------------------------------------------------- accounts
// Sign-in and sign-up call the gateway's /auth endpoints and keep the token it issues.
async function authenticate(path) {
  const email = $("signin-email").value.trim();
  const password = $("signin-password").value;
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ email, password }),
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    // client.md's error body: `error` is the sentence to show.
    const text = body && typeof body.error === "string" ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(text);
  }
  return body;
}

function keepSession(session) {
  localStorage.setItem(TOKEN_KEY, session.token);
  localStorage.setItem(EMAIL_KEY, session.user.email);
  location.reload();
}

function signOut() {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(EMAIL_KEY);
  location.reload();
}

function renderAccount() {
  const signedIn = Boolean(state.token);
  const email = localStorage.getItem(EMAIL_KEY) || "";
  $("signin").textContent = signedIn ? email || "Account" : "Sign in";
  $("signin-title").textContent = signedIn ? "Account" : "Sign in";
  if (signedIn) $("signin-note").textContent = email ? `Signed in as ${email}.` : "Signed in.";
  $("signin-fields").hidden = signedIn;
  $("signin-submit").hidden = signedIn;
  $("signup").hidden = signedIn;
  $("signout").hidden = !signedIn;
}

function wireSignIn() {
  const dialog = $("signin-dialog");
  renderAccount();
  const run = async (path) => {
    $("signin-error").textContent = "";
    try {
      keepSession(await authenticate(path));
    } catch (error) {
      $("signin-error").textContent = error.message;
    }
  };
  $("signin").addEventListener("click", () => { dialog.showModal(); if (!state.token) $("signin-email").focus(); });
  $("signin-cancel").addEventListener("click", () => dialog.close());
  $("signout").addEventListener("click", signOut);
  $("signup").addEventListener("click", () => run("/auth/register"));
  $("signin-form").addEventListener("submit", (event) => { event.preventDefault(); run("/auth/login"); });
}

wire();
start();
