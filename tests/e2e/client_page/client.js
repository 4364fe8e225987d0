// The web client's calls as client.md lists them: fetch stack (alerts) and axios-style calls
// (watchlist, webhooks), both with Content-Type: application/json and the Bearer token.
"use strict";

const API = localStorage.getItem("api_url");
const WS_URL = localStorage.getItem("ws_url");
const token = () => localStorage.getItem("auth_token");
const state = { alerts: [], frames: [], watchlist: [], errors: [], webhook: null };
window.clientState = state;

async function call(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token()}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    // axios shows response.data.error; it must be a string.
    const text = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
    state.errors.push(`${method} ${path}: ${text}`);
    throw new Error(text);
  }
  return data;
}

async function loadHistory() {
  const since = new Date(Date.now() - 48 * 3600 * 1000).toISOString();
  state.alerts = await call("GET", `/api/alerts?limit=2000&since=${since}`);
  document.getElementById("history").textContent = `history: ${state.alerts.length}`;
}

async function loadWatchlist() {
  state.watchlist = (await call("GET", "/api/watchlist")).symbols;
  const list = document.getElementById("coins");
  list.innerHTML = "";
  for (const coin of ["BTC", "ETH", "LINK"]) {
    const item = document.createElement("li");
    const star = document.createElement("button");
    star.className = "star";
    star.dataset.coin = coin;
    star.dataset.on = String(state.watchlist.includes(coin));
    star.textContent = `${coin} ${state.watchlist.includes(coin) ? "★" : "☆"}`;
    star.addEventListener("click", () => toggleStar(coin, star));
    item.appendChild(star);
    list.appendChild(item);
  }
}

async function toggleStar(coin, star) {
  const on = star.dataset.on !== "true";
  if (on) await call("POST", "/api/watchlist", { symbol: coin });
  else await call("DELETE", "/api/watchlist", { symbol: coin });
  star.dataset.on = String(on);
  star.textContent = `${coin} ${on ? "★" : "☆"}`;
}

// The webhook manager: create, toggle off and on, test.
window.runWebhook = async (url) => {
  const created = await call("POST", "/api/webhooks", {
    name: "Local receiver", webhook_type: "http", webhook_url: url, scope: "all", is_enabled: true, config: {},
  });
  await call("PATCH", `/api/webhooks/${created.id}/toggle`, { enabled: false });
  await call("PATCH", `/api/webhooks/${created.id}/toggle`, { enabled: true });
  await call("POST", `/api/webhooks/${created.id}/test`, {});
  const listed = await call("GET", "/api/webhooks");
  state.webhook = listed.webhooks.find((w) => w.id === created.id);
  document.getElementById("webhook").textContent = `webhook: tested ${state.webhook.name}`;
};

function connect() {
  const ws = new WebSocket(`${WS_URL}?token=${encodeURIComponent(token())}`);
  ws.onopen = () => { document.getElementById("ws").textContent = "ws: open"; };
  ws.onmessage = (event) => { state.frames.push(JSON.parse(event.data)); };
  setInterval(() => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping", timestamp: Date.now() }));
  }, 1000);
}

Promise.all([loadHistory(), loadWatchlist()]).catch((error) => state.errors.push(String(error)));
// Alert History polls every 5 s, as the client does.
setInterval(() => loadHistory().catch((error) => state.errors.push(String(error))), 5000);
connect();
