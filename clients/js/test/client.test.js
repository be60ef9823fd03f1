// GameClient against a scripted fake server: a fake WebSocket class stands in for the
// browser's (the real Gateway is tested from a real browser, tests/test_browser_demo.py).
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  ClientClosed, GameClient, MsgType, RequestError, RequestTimeout, decodeFrame, encodeFrame,
} from "../gamebackbone.js";

/** A server the test scripts: ``answer(socket, frame)`` is called for every frame sent. */
class FakeServer {
  constructor(answer) {
    this.answer = answer;
    this.sockets = [];
    this.refuse = new Set(); // URLs that do not accept connections
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.sent = [];
        this.closed = null;
        server.sockets.push(this);
        queueMicrotask(() => {
          if (server.refuse.has(url)) this.onclose?.({ code: 1006 });
          else this.onopen?.();
        });
      }
      send(data) {
        const frame = decodeFrame(data);
        this.sent.push(frame);
        queueMicrotask(() => server.answer(this, frame));
      }
      close(code) { this.closed = code; }
      // what the server does
      deliver(msgType, seq, payload) { this.onmessage?.({ data: encodeFrame(msgType, seq, payload).buffer }); }
      drop(code = 1006) { this.closed = code; this.onclose?.({ code }); }
    };
  }
}

const LOGIN_OK = (seq, extra = {}) => ({
  ok: true, result: "LOGIN_SUCCESS", user_id: 7, session_id: 9001, reconnect_key: "key-1",
  node_id: 1, last_sequence_id: seq, state: { x: 0, y: 0, moves: 0 }, ...extra,
});

/** Answers LOGIN, ECHO, MOVE (counting), RECONNECT (rotating the key) like a server. */
function gameServer(overrides = {}) {
  const state = { moves: 0, key: 1 };
  return (socket, frame) => {
    const { msgType, sequenceId: seq, payload } = frame;
    if (overrides[msgType] && overrides[msgType](socket, frame, state) !== undefined) return;
    if (msgType === MsgType.LOGIN_REQ) socket.deliver(MsgType.LOGIN_RES, seq, LOGIN_OK(seq));
    else if (msgType === MsgType.ECHO_REQ) socket.deliver(MsgType.ECHO_RES, seq, payload);
    else if (msgType === MsgType.MOVE_REQ) {
      state.moves += 1;
      socket.deliver(MsgType.MOVE_RES, seq, { x: payload.x, y: payload.y, moves: state.moves });
    } else if (msgType === MsgType.RECONNECT_REQ) {
      state.key += 1;
      socket.deliver(MsgType.RECONNECT_RES, 0, {
        ok: true, result: "RECONNECT_SUCCESS", user_id: 7, session_id: payload.session_id,
        reconnect_key: `key-${state.key}`, node_id: 2, last_sequence_id: 1,
        state: { x: 5, y: 6, moves: state.moves },
      });
    }
  };
}

function nextEvent(target, type) {
  return new Promise((resolve) => target.addEventListener(type, (e) => resolve(e.detail), { once: true }));
}

test("login, then requests matched to answers by sequence id", async () => {
  const server = new FakeServer(gameServer({
    // Answers in the reverse order of the requests: matching is by id, not by order.
    [MsgType.ECHO_REQ]: (socket, frame) => {
      if (frame.payload.n === 1) {
        setTimeout(() => socket.deliver(MsgType.ECHO_RES, frame.sequenceId, frame.payload), 20);
        return true;
      }
      return undefined;
    },
  }));
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket });
  const login = await client.login(7, { token: "t0k" });
  assert.equal(login.session_id, 9001);
  assert.equal(client.status, "online");
  const [socket] = server.sockets;
  assert.deepEqual(socket.sent[0].payload, { user_id: 7, token: "t0k" }); // no accept_compression
  assert.equal(socket.sent[0].sequenceId, 1);
  const [first, second] = await Promise.all([client.echo({ n: 1 }), client.echo({ n: 2 })]);
  assert.deepEqual([first, second], [{ n: 1 }, { n: 2 }]);
  assert.deepEqual(socket.sent.slice(1).map((f) => f.sequenceId), [2, 3]);
  const moved = await client.move(3, 4);
  assert.deepEqual(client.state, { x: 3, y: 4, moves: moved.moves });
  client.close();
});

test("the sequence counter moves above the session's last id", async () => {
  const server = new FakeServer(gameServer({
    [MsgType.LOGIN_REQ]: (socket, frame) => socket.deliver(
      MsgType.LOGIN_RES, frame.sequenceId, LOGIN_OK(frame.sequenceId, { last_sequence_id: 40 })),
  }));
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket });
  await client.login(7);
  await client.echo({});
  assert.equal(server.sockets[0].sent.at(-1).sequenceId, 41);
  client.close();
});

test("errors, refusals and timeouts", async () => {
  const server = new FakeServer(gameServer({
    [MsgType.WHISPER_REQ]: (socket, frame) => socket.deliver(
      MsgType.ERROR_RES, frame.sequenceId, { code: "BAD_PAYLOAD", message: "text too long" }),
    [MsgType.PING_REQ]: () => true, // never answered
  }));
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket, requestTimeoutMs: 30 });
  await client.login(7);
  await assert.rejects(client.whisper(8, "x"), (e) => e instanceof RequestError && e.code === "BAD_PAYLOAD");
  await assert.rejects(client.ping(), RequestTimeout);
  client.close();
  await assert.rejects(client.echo({}), ClientClosed);

  const refusing = new FakeServer(gameServer({
    [MsgType.LOGIN_REQ]: (socket, frame) => socket.deliver(MsgType.LOGIN_RES, frame.sequenceId, {
      ok: false, error: "AUTH_FAILED", message: "bad token" }),
  }));
  const other = new GameClient({ url: "ws://gw1/", WebSocket: refusing.WebSocket });
  await assert.rejects(other.login(7, { token: "x" }), (e) => e.code === "AUTH_FAILED");
  other.close();
});

test("pushes are events: whispers and kicks", async () => {
  const server = new FakeServer(gameServer());
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket });
  await client.login(7);
  const whisper = nextEvent(client, "whisper");
  server.sockets[0].deliver(MsgType.WHISPER_NTF, 0, { from_user_id: 8, text: "hi" });
  assert.deepEqual(await whisper, { from_user_id: 8, text: "hi" });
  const kicked = nextEvent(client, "kicked");
  const status = new Promise((resolve) => client.addEventListener("status", (e) => {
    if (e.detail.status === "kicked") resolve();
  }));
  const unanswered = client.echo({ never: true }).catch((e) => e);
  server.answer = () => {}; // the ECHO stays unanswered
  server.sockets[0].deliver(MsgType.KICKOUT_NTF, 0, { reason: "DUPLICATE_LOGIN" });
  server.sockets[0].drop(1000);
  assert.deepEqual(await kicked, { reason: "DUPLICATE_LOGIN" });
  await status;
  assert.ok((await unanswered) instanceof ClientClosed);
  assert.equal(server.sockets.length, 1, "no reconnect after DUPLICATE_LOGIN");
  assert.equal(client.sessionId, null);
});

test("a dropped connection is resumed and unanswered requests are sent again with their ids", async () => {
  let dropNextMove = true;
  const server = new FakeServer(gameServer({
    [MsgType.MOVE_REQ]: (socket) => {
      if (!dropNextMove) return undefined;
      dropNextMove = false;
      socket.deliver(MsgType.KICKOUT_NTF, 0, { reason: "SERVER_SHUTDOWN" });
      socket.drop(1000); // the MOVE's outcome is unknown
      return true;
    },
  }));
  const client = new GameClient({ urls: ["ws://gw1/", "ws://gw2/"], WebSocket: server.WebSocket });
  await client.login(7);
  const reconnected = nextEvent(client, "reconnected");
  const move = client.move(1, 2);
  const snapshot = await reconnected;
  assert.deepEqual(snapshot.state, { x: 5, y: 6, moves: 0 });
  assert.equal((await move).moves, 1);
  const [first, second] = server.sockets;
  assert.equal(second.url, "ws://gw2/", "after SERVER_SHUTDOWN the next Gateway is tried");
  const firstMove = first.sent.find((f) => f.msgType === MsgType.MOVE_REQ);
  assert.deepEqual(second.sent.map((f) => [f.msgType, f.sequenceId]), [
    [MsgType.RECONNECT_REQ, 0], [MsgType.MOVE_REQ, firstMove.sequenceId]]);
  assert.deepEqual(second.sent[0].payload, { session_id: 9001, reconnect_key: "key-1" });
  assert.equal(client.reconnectKey, "key-2");
  assert.equal(client.status, "online");
  assert.equal(client.reconnects, 1);
  client.close();
});

test("resuming goes through the Gateways in turn, and gives up on INVALID_SESSION", async () => {
  const server = new FakeServer(gameServer({
    [MsgType.RECONNECT_REQ]: (socket) => {
      socket.deliver(MsgType.RECONNECT_RES, 0, { ok: false, error: "INVALID_SESSION", message: "gone" });
      return true;
    },
  }));
  const client = new GameClient({ urls: ["ws://gw1/", "ws://gw2/"], WebSocket: server.WebSocket });
  await client.login(7);
  server.refuse.add("ws://gw1/"); // the first Gateway is down: the second one answers
  const lost = nextEvent(client, "sessionlost");
  const pending = client.echo({ lost: true }).catch((e) => e);
  server.answer = gameServer({
    [MsgType.RECONNECT_REQ]: (socket) => {
      socket.deliver(MsgType.RECONNECT_RES, 0, { ok: false, error: "INVALID_SESSION", message: "gone" });
      return true;
    },
    [MsgType.ECHO_REQ]: () => true,
  });
  server.sockets[0].drop(1006);
  const reason = (await lost).reason;
  assert.match(reason, /INVALID_SESSION/);
  assert.ok((await pending) instanceof ClientClosed);
  assert.deepEqual(server.sockets.map((s) => s.url), ["ws://gw1/", "ws://gw1/", "ws://gw2/"]);
  assert.equal(client.status, "offline");
});

test("logout ends the session: the server's close is not resumed", async () => {
  const server = new FakeServer(gameServer({
    [MsgType.LOGOUT_REQ]: (socket, frame) => {
      socket.deliver(MsgType.LOGOUT_RES, frame.sequenceId, { ok: true });
      socket.drop(1000);
      return true;
    },
  }));
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket });
  await client.login(7);
  assert.deepEqual(await client.logout(), { ok: true });
  assert.equal(client.sessionId, null);
  assert.equal(server.sockets.length, 1);
  assert.equal(client.status, "offline");
});

test("a quiet session sends PINGs to stay connected", async () => {
  const server = new FakeServer(gameServer({
    [MsgType.PING_REQ]: (socket, frame) => socket.deliver(
      MsgType.PONG_RES, frame.sequenceId, { client_time_ms: frame.payload.client_time_ms, server_time_ms: 1 }),
  }));
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket, keepAliveMs: 40 });
  await client.login(7);
  const socket = server.sockets[0];
  const deadline = Date.now() + 5000;
  await new Promise((resolve, reject) => {
    const check = () => {
      if (socket.sent.some((f) => f.msgType === MsgType.PING_REQ)) resolve();
      else if (Date.now() > deadline) reject(new Error("no keep-alive PING within 5 s"));
      else setTimeout(check, 5);
    };
    check();
  });
  assert.ok(Number.isInteger(socket.sent.find((f) => f.msgType === MsgType.PING_REQ).payload.client_time_ms));
  client.close();
});

test("a refused login leaves the client offline, its connection closed", async () => {
  const server = new FakeServer(gameServer({
    [MsgType.LOGIN_REQ]: (socket, frame) => socket.deliver(MsgType.LOGIN_RES, frame.sequenceId, {
      ok: false, error: "AUTH_FAILED", message: "bad token" }),
  }));
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket });
  await assert.rejects(client.login(7), (e) => e.code === "AUTH_FAILED");
  assert.equal(client.status, "offline");
  assert.equal(server.sockets[0].closed, 1000);
  server.refuse.add("ws://gw2/");
  const unreachable = new GameClient({ url: "ws://gw2/", WebSocket: server.WebSocket });
  await assert.rejects(unreachable.login(7), /cannot connect/);
  assert.equal(unreachable.status, "offline");
});

test("on resuming, the snapshot comes before the status goes online", async () => {
  const server = new FakeServer(gameServer());
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket });
  await client.login(7);
  const order = [];
  client.addEventListener("reconnected", () => order.push("reconnected"));
  client.addEventListener("status", (e) => order.push(e.detail.status));
  const online = new Promise((resolve) => client.addEventListener("status", (e) => {
    if (e.detail.status === "online") resolve();
  }));
  server.sockets[0].drop(1006);
  await online;
  assert.deepEqual(order, ["reconnecting", "reconnected", "online"]);
  assert.deepEqual(client.state, { x: 5, y: 6, moves: 0 });
  client.close();
});

test("a message that is not one good frame ends the session: no resume", async () => {
  const server = new FakeServer(gameServer());
  const client = new GameClient({ url: "ws://gw1/", WebSocket: server.WebSocket });
  await client.login(7);
  const error = nextEvent(client, "error");
  const pending = client.echo({ x: 1 }).catch((e) => e);
  server.answer = () => {};
  server.sockets[0].onmessage({ data: "a text message" });
  assert.match((await error).reason, /text message/);
  assert.ok((await pending) instanceof ClientClosed);
  assert.equal(client.status, "kicked");
  assert.equal(server.sockets[0].closed, 1000); // a code a browser accepts
  assert.equal(server.sockets.length, 1);
});
