// The browser demo of the game-server backbone: log in over WebSocket, move a dot with the
// arrow keys (MOVE_REQ), whisper to another user, PING, and watch the client resume its
// session when the connection drops (RECONNECT_RES and its state snapshot).
//
// Plain ES module, no build step: everything protocol-related is the client library,
// /js/gamebackbone.js (clients/js/). URL parameters preset the form:
//   ?gateway=ws://127.0.0.1:5080/[,ws://127.0.0.1:5081/]   Gateways, tried in turn on resuming
//   ?user=42   ?token=...   ?autologin=1 (log in as soon as the page has loaded)
//
// Element ids are stable (the browser tests in tests/test_browser_demo.py read them):
// #status #session #pos #moves #rtt #whispers #kick #log #snapshot #history #error.

import { GameClient, MsgType, RequestError } from "/js/gamebackbone.js";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), session: $("session"), userShown: $("user-shown"),
  reconnects: $("reconnects"), loginForm: $("login-form"), gateway: $("gateway"),
  user: $("user"), token: $("token"), login: $("login"), logout: $("logout"),
  error: $("error"), arena: $("arena"), pos: $("pos"), moves: $("moves"),
  snapshot: $("snapshot"), whisperForm: $("whisper-form"), whisperTo: $("whisper-to"),
  whisperText: $("whisper-text"), whisperSend: $("whisper-send"),
  whisperResult: $("whisper-result"), whispers: $("whispers"), ping: $("ping"),
  rtt: $("rtt"), kick: $("kick"), history: $("history"), log: $("log"),
};

const MSG_NAMES = new Map(Object.entries(MsgType).map(([name, value]) => [value, name]));
const LOG_LINES = 200;
const STEP = 1; // world units per key press
const PIXELS_PER_UNIT = 16;

/** Everything the page knows; ``window.demo`` for the console (tests read the DOM). */
const demo = {
  client: null,
  /** Where the dot is drawn: the last MOVE_RES, LOGIN_RES or RECONNECT_RES state. */
  state: null,
  /** Where the arrow keys have sent the player: ahead of ``state`` while MOVEs are in
   * flight, so quick key presses each add one step. */
  target: null,
  statusHistory: [],
  whispers: [],
};
window.demo = demo;

// ------------------------------------------------------------------ small helpers

function log(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  ui.log.prepend(item);
  while (ui.log.childElementCount > LOG_LINES) ui.log.lastElementChild.remove();
}

function showError(error) {
  const text = error instanceof RequestError ? `${error.code}: ${error.message}` : String(error?.message ?? error);
  ui.error.textContent = text;
  log(`error ${text}`);
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : String(Math.round(value * 1000) / 1000);
}

function gatewayUrls() {
  return ui.gateway.value.split(",").map((url) => url.trim()).filter((url) => url !== "");
}

function defaultGateway() {
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : (location.hostname || "127.0.0.1");
  // GATEWAY_WS_PORT 5080; GATEWAY_WSS_PORT 5444 for a page served over https.
  return location.protocol === "https:" ? `wss://${host}:5444/` : `ws://${host}:5080/`;
}

// ------------------------------------------------------------------ rendering

function setStatus(status) {
  ui.status.textContent = status;
  ui.status.dataset.status = status;
  if (demo.statusHistory.at(-1) !== status) {
    demo.statusHistory.push(status);
    ui.history.textContent = demo.statusHistory.join(" → ");
  }
  const online = status === "online";
  ui.ping.disabled = !online;
  ui.whisperSend.disabled = !online;
  ui.logout.disabled = !(online || status === "reconnecting");
  ui.login.disabled = status === "connecting";
}

function setState(state) {
  if (!state) return;
  demo.state = { x: state.x, y: state.y, moves: state.moves };
  ui.pos.textContent = `${formatNumber(state.x)},${formatNumber(state.y)}`;
  ui.moves.textContent = String(state.moves);
  draw();
}

function draw() {
  const canvas = ui.arena;
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = "#d8dde6";
  ctx.lineWidth = 1;
  for (let px = (width / 2) % PIXELS_PER_UNIT; px < width; px += PIXELS_PER_UNIT) {
    ctx.beginPath(); ctx.moveTo(px + 0.5, 0); ctx.lineTo(px + 0.5, height); ctx.stroke();
  }
  for (let py = (height / 2) % PIXELS_PER_UNIT; py < height; py += PIXELS_PER_UNIT) {
    ctx.beginPath(); ctx.moveTo(0, py + 0.5); ctx.lineTo(width, py + 0.5); ctx.stroke();
  }
  ctx.strokeStyle = "#9aa3b2";
  ctx.beginPath(); ctx.moveTo(width / 2 + 0.5, 0); ctx.lineTo(width / 2 + 0.5, height); ctx.stroke();
  ctx.beginPath(); ctx.moveTo(0, height / 2 + 0.5); ctx.lineTo(width, height / 2 + 0.5); ctx.stroke();
  if (demo.state === null) return;
  // World y grows upwards; a position off the canvas is drawn at its edge.
  const r = 7;
  const cx = Math.min(width - r, Math.max(r, width / 2 + demo.state.x * PIXELS_PER_UNIT));
  const cy = Math.min(height - r, Math.max(r, height / 2 - demo.state.y * PIXELS_PER_UNIT));
  ctx.fillStyle = demo.client?.status === "online" ? "#2f6fd6" : "#8a8f98";
  ctx.beginPath(); ctx.arc(cx, cy, r, 0, 2 * Math.PI); ctx.fill();
  ctx.fillStyle = "#1d2430";
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(`${formatNumber(demo.state.x)},${formatNumber(demo.state.y)}`, 6, height - 8);
}

// ------------------------------------------------------------------ the client

function attach(client) {
  client.addEventListener("status", (event) => {
    if (demo.client !== client) return;
    setStatus(event.detail.status);
    log(`status ${event.detail.status}`);
    draw();
  });
  client.addEventListener("reconnected", (event) => {
    if (demo.client !== client) return;
    const result = event.detail;
    ui.session.textContent = String(result.session_id);
    ui.reconnects.textContent = String(client.reconnects ?? Number(ui.reconnects.textContent) + 1);
    const state = result.state ?? {};
    ui.snapshot.textContent = `x=${formatNumber(state.x)} y=${formatNumber(state.y)} moves=${state.moves}`
      + ` (last_sequence_id ${result.last_sequence_id})`;
    demo.target = { x: state.x, y: state.y };
    setState(state);
    log(`reconnected session ${result.session_id}: state ${JSON.stringify(state)}`);
  });
  client.addEventListener("whisper", (event) => {
    if (demo.client !== client) return;
    const { from_user_id: from, text } = event.detail;
    demo.whispers.push({ from, text });
    const item = document.createElement("li");
    item.dataset.from = String(from);
    item.textContent = `${from}: ${text}`;
    ui.whispers.append(item);
  });
  client.addEventListener("kicked", (event) => {
    if (demo.client !== client) return;
    ui.kick.textContent = event.detail.reason;
    log(`kicked ${event.detail.reason}`);
  });
  client.addEventListener("push", (event) => {
    if (demo.client !== client) return;
    const { msgType, payload } = event.detail;
    log(`push ${MSG_NAMES.get(msgType) ?? msgType} ${JSON.stringify(payload)}`);
  });
  client.addEventListener("error", (event) => {
    if (demo.client !== client) return;
    log(`protocol error: ${event.detail?.reason ?? ""}`);
  });
  client.addEventListener("sessionlost", (event) => {
    if (demo.client !== client) return;
    log(`session lost: ${event.detail?.reason ?? ""}`);
  });
}

async function login() {
  const urls = gatewayUrls();
  const userId = Number(ui.user.value);
  if (urls.length === 0 || !Number.isInteger(userId) || userId < 1) {
    showError("give a Gateway URL and a user id ≥ 1");
    return;
  }
  ui.error.textContent = "";
  ui.kick.textContent = "none";
  if (demo.client !== null) demo.client.close();
  const client = new GameClient({ urls, requestTimeoutMs: 5000, autoReconnect: true });
  demo.client = client;
  demo.target = null;
  attach(client);
  setStatus("connecting");
  log(`login user ${userId} via ${urls.join(", ")}`);
  try {
    const token = ui.token.value.trim();
    const result = await client.login(userId, { token: token === "" ? undefined : token });
    if (demo.client !== client) return;
    ui.session.textContent = String(result.session_id);
    ui.userShown.textContent = String(result.user_id ?? userId);
    demo.target = { x: result.state.x, y: result.state.y };
    setState(result.state);
    setStatus(client.status ?? "online");
    log(`logged in: session ${result.session_id} on node ${result.node_id}`);
  } catch (error) {
    if (demo.client !== client) return;
    showError(error);
    // The library is offline again (or "kicked", when a racing login of the same user won).
    setStatus(client.status ?? "offline");
  }
}

async function logout() {
  const client = demo.client;
  if (client === null) return;
  try {
    await client.logout();
    log("logged out");
  } catch (error) {
    showError(error);
  }
  ui.session.textContent = "–";
}

async function move(dx, dy) {
  const client = demo.client;
  if (client === null || demo.target === null || client.status !== "online") return;
  const target = { x: demo.target.x + dx, y: demo.target.y + dy };
  demo.target = target;
  try {
    const result = await client.move(target.x, target.y);
    if (demo.client === client) setState(result);
  } catch (error) {
    if (demo.client !== client) return;
    showError(error);
    // Back to what the server has: the next key press starts from there.
    if (client.state) demo.target = { x: client.state.x, y: client.state.y };
  }
}

async function ping({ show }) {
  const client = demo.client;
  if (client === null || client.status !== "online") return;
  try {
    const result = await client.ping();
    if (show && demo.client === client) {
      ui.rtt.textContent = `${formatNumber(result.rtt_ms)} ms`;
      log(`pong: round trip ${formatNumber(result.rtt_ms)} ms`);
    }
  } catch (error) {
    if (show) showError(error);
  }
}

async function whisper() {
  const client = demo.client;
  if (client === null) return;
  const to = Number(ui.whisperTo.value);
  const text = ui.whisperText.value;
  ui.whisperResult.textContent = "…";
  try {
    const result = await client.whisper(to, text);
    ui.whisperResult.textContent = result.delivered ? "delivered" : "not delivered (offline)";
    log(`whisper to ${to}: delivered=${result.delivered}`);
  } catch (error) {
    ui.whisperResult.textContent = "failed";
    showError(error);
  }
}

// ------------------------------------------------------------------ wiring

const KEYS = new Map([
  ["ArrowLeft", [-STEP, 0]], ["ArrowRight", [STEP, 0]],
  ["ArrowUp", [0, STEP]], ["ArrowDown", [0, -STEP]],
]);

document.addEventListener("keydown", (event) => {
  const delta = KEYS.get(event.key);
  if (delta === undefined) return;
  const tag = event.target?.tagName;
  if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return; // typing, not playing
  event.preventDefault(); // no page scrolling
  if (event.repeat) return; // one step per key press, not per auto-repeat
  move(...delta);
});

ui.loginForm.addEventListener("submit", (event) => { event.preventDefault(); login(); });
ui.logout.addEventListener("click", () => { logout(); });
ui.ping.addEventListener("click", () => { ping({ show: true }); });
ui.whisperForm.addEventListener("submit", (event) => { event.preventDefault(); whisper(); });
ui.arena.addEventListener("click", () => ui.arena.focus());
window.addEventListener("pagehide", () => demo.client?.close());
// (A quiet page stays connected: the library PINGs while nothing else is sent, keepAliveMs.)

const params = new URLSearchParams(location.search);
ui.gateway.value = params.get("gateway") || defaultGateway();
ui.user.value = params.get("user") || "";
ui.token.value = params.get("token") || "";
setStatus("offline");
draw();
log("ready");
if (params.get("autologin") === "1" && ui.user.value !== "") login();
