// gamebackbone: the JavaScript client of the game-server backbone, over WebSocket.
//
// One ES module, no runtime dependencies, for browsers (and Node >= 22, or Node 20 with
// --experimental-websocket). The wire protocol is docs/PROTOCOL.md: over WebSocket every
// binary message is exactly one frame (§1.1). The client does what the Python client
// (clients/test_client/client.py) does: LOGIN (with an optional HMAC token), requests
// matched to answers by sequence id with timeouts, pushes as events, and, when the
// connection drops, RECONNECT with the rotating key and the unanswered requests sent again
// with their original sequence ids (PROTOCOL §10).
//
// LZ4 is declined: the client never sends accept_compression, so the server never
// compresses for it (PROTOCOL §2). A browser has no LZ4 decoder, and the small ones on npm
// are either unmaintained or pull in a WebAssembly build; a dependency-free library would
// have to carry a hand-written decoder, for payloads that in this protocol are small JSON.
// A frame that arrives compressed anyway is a protocol error (the connection is dropped).

/** Message types (PROTOCOL §4). */
export const MsgType = Object.freeze({
  LOGIN_REQ: 1, LOGIN_RES: 2, RECONNECT_REQ: 3, RECONNECT_RES: 4, LOGOUT_REQ: 5,
  LOGOUT_RES: 6, PING_REQ: 7, PONG_RES: 8, ECHO_REQ: 9, ECHO_RES: 10, MOVE_REQ: 11,
  MOVE_RES: 12, WHISPER_REQ: 13, WHISPER_RES: 14, ERROR_RES: 100, KICKOUT_NTF: 200,
  WHISPER_NTF: 201,
});

/** The answer type of each request type. */
const ANSWER = new Map([
  [MsgType.LOGIN_REQ, MsgType.LOGIN_RES], [MsgType.RECONNECT_REQ, MsgType.RECONNECT_RES],
  [MsgType.LOGOUT_REQ, MsgType.LOGOUT_RES], [MsgType.PING_REQ, MsgType.PONG_RES],
  [MsgType.ECHO_REQ, MsgType.ECHO_RES], [MsgType.MOVE_REQ, MsgType.MOVE_RES],
  [MsgType.WHISPER_REQ, MsgType.WHISPER_RES],
]);

/** Types from 200 up are pushes (sequence id 0); below, answers. */
export const FIRST_NOTIFICATION_TYPE = 200;

export const HEADER_BYTES = 12;
const FLAG_LZ4 = 0x01;
const SEQ_MAX = 0xffffffff;

/** Kicks after which the session must not be resumed automatically (PROTOCOL §6, §10). */
export const NO_RESUME_KICKS = Object.freeze(new Set([
  "DUPLICATE_LOGIN", "SESSION_RESUMED_ELSEWHERE", "ADMIN_KICK", "PROTOCOL_ERROR",
]));

/** RECONNECT answers that are worth another attempt (PROTOCOL §10). */
const RETRYABLE_RESUME_ERRORS = new Set(["SERVER_UNAVAILABLE", "SERVER_BUSY", "INTERNAL_ERROR"]);

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A frame could not be read: the connection cannot be trusted any more. */
export class ProtocolViolation extends Error {
  constructor(message) { super(message); this.name = "ProtocolViolation"; }
}

/** The server refused a request: ERROR_RES, or ok:false in a LOGIN/RECONNECT answer. */
export class RequestError extends Error {
  constructor(code, message, payload = {}) {
    super(`${code}: ${message}`);
    this.name = "RequestError";
    this.code = code;
    this.payload = payload;
  }
}

/** No answer within the request timeout (the request may still have been carried out). */
export class RequestTimeout extends Error {
  constructor(message) { super(message); this.name = "RequestTimeout"; }
}

/** The client is closed, or the session is gone and cannot be resumed. */
export class ClientClosed extends Error {
  constructor(message) { super(message); this.name = "ClientClosed"; }
}

// --------------------------------------------------------------------- frames (pure)

/**
 * One frame: header (PROTOCOL §1) and the payload as UTF-8 JSON.
 * @param {number} msgType @param {number} sequenceId @param {object} [payload]
 * @returns {Uint8Array}
 */
export function encodeFrame(msgType, sequenceId, payload = {}) {
  if (!Number.isInteger(sequenceId) || sequenceId < 0 || sequenceId > SEQ_MAX) {
    throw new RangeError(`sequence id ${sequenceId} is not a u32`);
  }
  const body = encoder.encode(JSON.stringify(payload));
  const frame = new Uint8Array(HEADER_BYTES + body.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, 8 + body.length);
  view.setUint16(4, msgType);
  view.setUint8(6, 0);
  view.setUint8(7, 0);
  view.setUint32(8, sequenceId);
  frame.set(body, HEADER_BYTES);
  return frame;
}

/**
 * Read one whole frame (a WebSocket message carries exactly one).
 * @param {ArrayBuffer | Uint8Array} data
 * @returns {{msgType: number, flags: number, sequenceId: number, payload: object}}
 */
export function decodeFrame(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length < HEADER_BYTES) {
    throw new ProtocolViolation(`a frame of ${bytes.length} bytes is shorter than its header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getUint32(0);
  if (length !== bytes.length - 4) {
    throw new ProtocolViolation(`length field ${length} does not match ${bytes.length - 4}`);
  }
  const msgType = view.getUint16(4);
  const flags = view.getUint8(6);
  const sequenceId = view.getUint32(8);
  if (flags & FLAG_LZ4) {
    throw new ProtocolViolation("an LZ4-compressed payload, which this client declined");
  }
  if (flags !== 0 || view.getUint8(7) !== 0) {
    throw new ProtocolViolation(`flags ${flags} / reserved ${view.getUint8(7)} must be 0`);
  }
  let payload = {};
  if (bytes.length > HEADER_BYTES) {
    try {
      payload = JSON.parse(decoder.decode(bytes.subarray(HEADER_BYTES)));
    } catch (error) {
      throw new ProtocolViolation(`payload is not UTF-8 JSON: ${error.message}`);
    }
  }
  return { msgType, flags, sequenceId, payload };
}

// --------------------------------------------------------------------- the client

/** An Event carrying ``detail`` (CustomEvent is not global in every runtime we support). */
export class ClientEvent extends Event {
  constructor(type, detail) { super(type); this.detail = detail; }
}

const defaultTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
  now: () => Date.now(),
  random: () => Math.random(),
};

/**
 * A game client: one session at a time, over one WebSocket at a time.
 *
 * Events (``addEventListener``; the data is ``event.detail``): ``status``
 * ({status}: connecting | online | reconnecting | offline | kicked), ``reconnected``
 * (the RECONNECT_RES payload), ``whisper`` ({from_user_id, text}), ``kicked``
 * ({reason}), ``push`` ({msgType, payload}, every push), ``sessionlost`` ({reason}).
 */
export class GameClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string[]} [options.urls] Gateways' WebSocket URLs, tried in turn on resuming.
   * @param {string} [options.url] One URL (instead of ``urls``).
   * @param {number} [options.requestTimeoutMs] How long a request waits for its answer.
   * @param {boolean} [options.autoReconnect] Resume the session when the connection drops.
   * @param {number} [options.reconnectTimeoutMs] How long resuming may take in all.
   * @param {number} [options.maxFrameBytes] Largest frame sent (the Gateway's MAX_FRAME_BYTES).
   * @param {number} [options.keepAliveMs] PING when nothing was sent for this long while
   *   logged in (the Gateway drops a connection silent for IDLE_TIMEOUT_S, 30 s by default;
   *   a browser cannot send WebSocket pings). 0: never.
   * @param {Function} [options.WebSocket] The WebSocket class (default: the global one).
   * @param {object} [options.timers] setTimeout/clearTimeout/now/random (tests inject them).
   */
  constructor(options = {}) {
    super();
    const urls = options.urls ?? (options.url ? [options.url] : []);
    if (urls.length === 0) throw new TypeError("GameClient needs url or urls");
    this.urls = [...urls];
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    this.autoReconnect = options.autoReconnect ?? true;
    this.reconnectTimeoutMs = options.reconnectTimeoutMs ?? 30000;
    this.maxFrameBytes = options.maxFrameBytes ?? 65536;
    this.keepAliveMs = options.keepAliveMs ?? 10000;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError("no WebSocket class: pass options.WebSocket");
    }
    this.timers = { ...defaultTimers, ...(options.timers ?? {}) };
    /** @type {number | null} */ this.userId = null;
    /** @type {number | null} */ this.sessionId = null;
    /** @type {string | null} */ this.reconnectKey = null;
    /** The player's state as last known: from LOGIN/RECONNECT, then every MOVE_RES. */
    this.state = null;
    this.status = "offline";
    this.reconnects = 0;
    this._nextSeq = 1;
    this._urlIndex = 0;
    this._socket = null;
    /** seq -> {msgType, frame, resolve, reject, timer, order} */
    this._pending = new Map();
    this._order = 0;
    /** The outstanding RECONNECT (sequence id 0, matched by its answer's type):
     * {answer(msgType, payload), fail(error)}. */
    this._handshake = null;
    this._kick = null;
    this._closed = false;
    this._loggingOut = false;
    this._resuming = null;
    this._lastSentAt = 0;
    this._keepAliveTimer = null;
  }

  // ------------------------------------------------------------------ public API

  /** Connect (if needed) and log in; resolves with the LOGIN_RES payload. */
  async login(userId, { token } = {}) {
    this._closed = false;
    this._kick = null;
    const body = { user_id: userId };
    if (token !== undefined && token !== null && token !== "") body.token = token;
    let result;
    try {
      if (this._socket === null) await this._connectTo(this.urls[this._urlIndex]);
      result = await this.request(MsgType.LOGIN_REQ, body);
    } catch (error) {
      if (this.sessionId === null && this.status !== "kicked") {
        // Refused, or no connection: nothing to keep open.
        this._dropSocket(1000);
        this._setStatus("offline");
      }
      throw error;
    }
    this.userId = userId;
    this._loggingOut = false;
    this._acceptSession(result);
    this._setStatus("online");
    this._keepAlive();
    return result;
  }

  /** Send a request; resolves with the answer's payload, rejects with RequestError. */
  request(msgType, payload = {}) {
    if (this._closed) return Promise.reject(new ClientClosed("the client is closed"));
    if (this._socket === null && this._resuming === null) {
      return Promise.reject(new ClientClosed("not connected"));
    }
    const seq = this._takeSeq();
    const frame = encodeFrame(msgType, seq, payload);
    if (frame.length - 4 > this.maxFrameBytes) {
      return Promise.reject(new RangeError(`frame of ${frame.length} bytes over maxFrameBytes`));
    }
    return new Promise((resolve, reject) => {
      const pending = { msgType, seq, frame, resolve, reject, timer: null, order: this._order++ };
      this._pending.set(seq, pending);
      if (this._resuming === null) this._transmit(pending);
      else this._arm(pending); // sent once the session is resumed
    });
  }

  echo(obj) { return this.request(MsgType.ECHO_REQ, obj); }

  async move(x, y) {
    const result = await this.request(MsgType.MOVE_REQ, { x, y });
    this.state = { x: result.x, y: result.y, moves: result.moves };
    return result;
  }

  whisper(toUserId, text) {
    return this.request(MsgType.WHISPER_REQ, { to_user_id: toUserId, text });
  }

  /** PONG_RES payload plus ``rtt_ms`` measured here. */
  async ping() {
    const started = performance.now();
    const result = await this.request(MsgType.PING_REQ, { client_time_ms: Date.now() });
    return { ...result, rtt_ms: Math.round((performance.now() - started) * 1000) / 1000 };
  }

  /** Log out; the server closes the socket afterwards and nothing is resumed. */
  async logout() {
    this._loggingOut = true;
    try {
      return await this.request(MsgType.LOGOUT_REQ, {});
    } catch (error) {
      this._loggingOut = false;
      throw error;
    } finally {
      if (this._loggingOut) this._forgetSession();
    }
  }

  /** Close the connection for good: unanswered requests fail, nothing is resumed. */
  close() {
    this._closed = true;
    this._resuming = null;
    if (this._keepAliveTimer !== null) this.timers.clearTimeout(this._keepAliveTimer);
    this._keepAliveTimer = null;
    this._dropSocket(1000);
    this._failAll(new ClientClosed("the client was closed"));
    this._setStatus("offline");
  }

  // ------------------------------------------------------------------ connection

  _connectTo(url) {
    this._setStatus(this.sessionId === null ? "connecting" : "reconnecting");
    return new Promise((resolve, reject) => {
      let socket;
      try {
        socket = new this.WebSocket(url);
      } catch (error) {
        reject(error);
        return;
      }
      socket.binaryType = "arraybuffer";
      let opened = false;
      socket.onopen = () => {
        opened = true;
        this._socket = socket;
        resolve(socket);
      };
      socket.onmessage = (event) => {
        if (this._socket === socket) this._onMessage(event.data);
      };
      socket.onerror = () => {}; // onclose follows, with the code
      socket.onclose = (event) => {
        if (!opened) {
          reject(new Error(`cannot connect to ${url} (close ${event.code})`));
          return;
        }
        if (this._socket === socket) this._onClose(event.code);
      };
    });
  }

  _dropSocket(code) {
    const socket = this._socket;
    this._socket = null;
    if (socket !== null) {
      socket.onmessage = socket.onclose = socket.onopen = null;
      try { socket.close(code); } catch { /* already closing */ }
    }
  }

  _onMessage(data) {
    if (typeof data === "string") {
      this._violation("a text message from the server");
      return;
    }
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (error) {
      this._violation(error.message);
      return;
    }
    const { msgType, sequenceId, payload } = frame;
    if (msgType >= FIRST_NOTIFICATION_TYPE) {
      this._onPush(msgType, payload);
      return;
    }
    if (sequenceId === 0) {
      const handshake = this._handshake;
      if (handshake !== null && (msgType === MsgType.RECONNECT_RES || msgType === MsgType.ERROR_RES)) {
        this._handshake = null;
        handshake.answer(msgType, payload);
      }
      return;
    }
    const pending = this._pending.get(sequenceId);
    if (pending === undefined) return; // a late answer to a request that timed out
    this._settle(pending, msgType, payload);
  }

  _onPush(msgType, payload) {
    this.dispatchEvent(new ClientEvent("push", { msgType, payload }));
    if (msgType === MsgType.KICKOUT_NTF) {
      this._kick = payload.reason ?? "UNKNOWN";
      this.dispatchEvent(new ClientEvent("kicked", { reason: this._kick }));
      const login = [...this._pending.values()].find((p) => p.msgType === MsgType.LOGIN_REQ);
      if (login !== undefined && NO_RESUME_KICKS.has(this._kick)) {
        // A login that lost a race: this kick is its answer (PROTOCOL §4, LOGIN_REQ).
        this._settle(login, MsgType.ERROR_RES, { code: this._kick, message: "kicked" });
      }
    } else if (msgType === MsgType.WHISPER_NTF) {
      this.dispatchEvent(new ClientEvent("whisper", payload));
    }
  }

  _onClose(code) {
    this._socket = null;
    if (this._resuming !== null) { // a connection of the resume loop went away: it goes on
      const handshake = this._handshake;
      this._handshake = null;
      if (handshake !== null) handshake.fail(new Error(`connection closed (${code}) during RECONNECT`));
      return;
    }
    const kick = this._kick;
    this._kick = null;
    const resumable = this.autoReconnect && !this._closed && !this._loggingOut &&
      this.sessionId !== null && !NO_RESUME_KICKS.has(kick);
    if (!resumable) {
      if (kick !== null && NO_RESUME_KICKS.has(kick)) {
        this._forgetSession();
        this._setStatus("kicked");
      } else {
        this._setStatus("offline");
      }
      this._failAll(new ClientClosed(kick ? `kicked: ${kick}` : `connection closed (${code})`));
      return;
    }
    if (kick === "SERVER_SHUTDOWN") this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    this._resume().catch(() => { /* reported by events and by the requests' rejections */ });
  }

  _violation(reason) {
    this.dispatchEvent(new ClientEvent("error", { reason }));
    this._kick = "PROTOCOL_ERROR"; // our side's view: the stream cannot be trusted
    const socket = this._socket;
    // (A browser lets a client close only with 1000 or 3000-4999: not 1002.)
    this._dropSocket(1000);
    if (socket !== null) this._onClose(1002);
  }

  // ------------------------------------------------------------------ requests

  _takeSeq() {
    const seq = this._nextSeq;
    this._nextSeq = seq >= SEQ_MAX ? 1 : seq + 1;
    return seq;
  }

  _transmit(pending) {
    if (this._socket !== null) {
      this._socket.send(pending.frame);
      this._lastSentAt = this.timers.now();
    }
    this._arm(pending);
  }

  /** While logged in: a PING whenever nothing was sent for keepAliveMs. */
  _keepAlive() {
    if (this.keepAliveMs <= 0 || this._keepAliveTimer !== null) return;
    const tick = () => {
      this._keepAliveTimer = null;
      if (this._closed || this.sessionId === null) return; // logged out, kicked, closed
      if (this.status === "online" && this.timers.now() - this._lastSentAt >= this.keepAliveMs) {
        this.ping().catch(() => { /* a lost connection is handled by the resume */ });
      }
      this._keepAliveTimer = this._unref(this.timers.setTimeout(tick, this.keepAliveMs / 2));
    };
    this._keepAliveTimer = this._unref(this.timers.setTimeout(tick, this.keepAliveMs / 2));
  }

  /** In Node, a keep-alive alone must not keep the process running. */
  _unref(handle) {
    handle?.unref?.();
    return handle;
  }

  _arm(pending) {
    if (pending.timer !== null) this.timers.clearTimeout(pending.timer);
    pending.timer = this.timers.setTimeout(() => {
      pending.timer = null;
      if (this._pending.get(pending.seq) === pending) {
        this._pending.delete(pending.seq);
        pending.reject(new RequestTimeout(
          `no answer to type ${pending.msgType} seq ${pending.seq} in ${this.requestTimeoutMs} ms`));
      }
    }, this.requestTimeoutMs);
  }

  _settle(pending, msgType, payload) {
    this._pending.delete(pending.seq);
    if (pending.timer !== null) this.timers.clearTimeout(pending.timer);
    pending.timer = null;
    if (msgType === MsgType.ERROR_RES) {
      pending.reject(new RequestError(payload.code ?? "ERROR", payload.message ?? "", payload));
    } else if ((msgType === MsgType.LOGIN_RES || msgType === MsgType.RECONNECT_RES) && payload.ok === false) {
      pending.reject(new RequestError(payload.error ?? "ERROR", payload.message ?? "", payload));
    } else if (msgType !== ANSWER.get(pending.msgType)) {
      pending.reject(new RequestError("UNEXPECTED_ANSWER", `answer type ${msgType}`, payload));
    } else {
      pending.resolve(payload);
    }
  }

  _failAll(error) {
    const waiting = [...this._pending.values()];
    this._pending.clear();
    for (const pending of waiting) {
      if (pending.timer !== null) this.timers.clearTimeout(pending.timer);
      pending.reject(error);
    }
  }

  // ------------------------------------------------------------------ sessions

  _acceptSession(result) {
    this.sessionId = result.session_id;
    this.reconnectKey = result.reconnect_key;
    if (result.state) this.state = { ...result.state };
    const last = result.last_sequence_id ?? 0;
    if (last + 1 > this._nextSeq) this._nextSeq = last + 1;
  }

  _forgetSession() {
    this.sessionId = null;
    this.reconnectKey = null;
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.dispatchEvent(new ClientEvent("status", { status }));
  }

  /** RECONNECT through the Gateways in turn, backing off, within reconnectTimeoutMs. */
  async _resume() {
    const token = {};
    this._resuming = token;
    const deadline = this.timers.now() + this.reconnectTimeoutMs;
    let delay = 0;
    let attempts = 0;
    let lastError = null;
    this._setStatus("reconnecting");
    while (this._resuming === token) {
      if (delay > 0) await this._sleep(delay);
      if (this._resuming !== token) return;
      if (this.timers.now() >= deadline) break;
      const url = this.urls[this._urlIndex];
      attempts += 1;
      try {
        await this._connectTo(url);
        const result = await this._reconnectHandshake();
        if (this._resuming !== token) return;
        this._resuming = null;
        this.reconnects += 1;
        this._acceptSession(result);
        // The snapshot first, so that whoever shows "online" already has the state.
        this.dispatchEvent(new ClientEvent("reconnected", result));
        this._setStatus("online");
        // Every unanswered request again, with its original sequence id, oldest first.
        const waiting = [...this._pending.values()].sort((a, b) => a.order - b.order);
        for (const pending of waiting) this._transmit(pending);
        return;
      } catch (error) {
        lastError = error;
        this._dropSocket(1000);
        if (error instanceof RequestError && !RETRYABLE_RESUME_ERRORS.has(error.code)) break;
        this._urlIndex = (this._urlIndex + 1) % this.urls.length;
        delay = Math.min(2000, 100 * 2 ** Math.min(attempts, 5)) * (0.5 + this.timers.random() / 2);
      }
    }
    if (this._resuming !== token) return;
    this._resuming = null;
    this._forgetSession();
    const reason = `cannot resume the session after ${attempts} attempts: ${lastError?.message ?? "timed out"}`;
    this._setStatus("offline");
    this.dispatchEvent(new ClientEvent("sessionlost", { reason }));
    this._failAll(new ClientClosed(reason));
    throw new ClientClosed(reason);
  }

  _reconnectHandshake() {
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        this._handshake = null;
        reject(new RequestTimeout("no answer to RECONNECT"));
      }, this.requestTimeoutMs);
      this._handshake = {
        answer: (msgType, payload) => {
          this.timers.clearTimeout(timer);
          if (msgType === MsgType.ERROR_RES) {
            reject(new RequestError(payload.code ?? "ERROR", payload.message ?? "", payload));
          } else if (payload.ok === false) {
            reject(new RequestError(payload.error ?? "ERROR", payload.message ?? "", payload));
          } else {
            resolve(payload);
          }
        },
        fail: (error) => {
          this.timers.clearTimeout(timer);
          reject(error);
        },
      };
      this._socket.send(encodeFrame(MsgType.RECONNECT_REQ, 0, {
        session_id: this.sessionId, reconnect_key: this.reconnectKey,
      }));
    });
  }

  _sleep(ms) {
    return new Promise((resolve) => this.timers.setTimeout(resolve, ms));
  }
}
