// The web client's calls as client.md lists them: fetch stack (alerts) and axios-style calls
// (watchlist, webhooks), both with Content-Type: application/json and the Bearer token.
"use strict";

const API = localStorage.getItem("api_url");
const WS_URL = localStorage.getItem("ws_url");
const token = () => localStorage.getItem("auth_token");
const state = { alerts: [], frames: [], watchlist: [], errors: [], webhook: null, me: null };
window.clientState = state;

async function call(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: token()
      ? { "Content-Type": "application/json", Authorization: `Bearer ${token()}` }
      : { "Content-Type": "application/json" },
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

// The client's login gate: sign up (once) and log in through the backend, then GET /api/me on every
// page load with the stored token; any failure there would log out.
async function signIn() {
  if (!token()) {
    const account = JSON.parse(localStorage.getItem("account"));
    await fetch(API + "/auth/register", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(account),
    });
    const session = await call("POST", "/auth/login", account);
    localStorage.setItem("auth_token", session.token);
    localStorage.setItem("auth_user", JSON.stringify(session.user));
  }
  state.me = await call("GET", "/api/me");
  document.getElementById("me").textContent = `signed in: ${state.me.email}`;
}

signIn()
  .then(() => {
    Promise.all([loadHistory(), loadWatchlist()]).catch((error) => state.errors.push(String(error)));
    // Alert History polls every 5 s, as the client does.
    setInterval(() => loadHistory().catch((error) => state.errors.push(String(error))), 5000);
    connect();
  })
  .catch((error) => state.errors.push(String(error)));
