/**
 * paycast-realtime.js — the browser (and Node ≥ 22) client of Paycast's realtime
 * WebSocket (`GET /v1/realtime`, docs/api.md "Realtime (WebSocket)"). One ES module, no
 * dependencies, no build step. Paycast serves it at `/static/paycast-realtime.js`.
 *
 * What it takes off the app's hands:
 * - **Tokens.** `getToken({deviceId})` (the app asks its backend, which calls
 *   `POST /v1/realtime/tokens`) is called for the first connection, when the
 *   cached token is past its `expires_at`, and after a handshake that failed
 *   (a browser cannot read the 401's body, so an expired or revoked token and a
 *   network failure look alike: a new token is cheap, a stale one loops).
 * - **Resume.** `after_seq` is the last `seq` handed to the app, kept in memory
 *   and optionally in `localStorage`, so a reconnect neither loses nor repeats an
 *   event. Events arrive in `seq` order; one at or below the last handed-over seq
 *   is dropped (a replay overlapping what was already delivered).
 * - **Reconnects** with capped exponential backoff and full jitter (AWS
 *   architecture blog, "Exponential Backoff And Jitter"): the n-th retry waits a
 *   uniform random time in [0, min(maxMs, baseMs·2ⁿ)). A connection that got its
 *   `welcome` resets the count. Close 1013 (slow consumer) resumes with
 *   `after_seq` like any other drop; close 4001 (device deleted) stops for good
 *   and emits `revoked`: a new token is the app's decision, not ours.
 * - **Liveness.** The server pings every `PAYCAST_REALTIME_PING_S` (20 s); each
 *   ping is answered with a pong. A socket silent for `idleTimeoutMs` is
 *   presumed dead (a cut network may never deliver a close) and replaced.
 * - **Acks** of what the app received, batched: sent when `ackCount` events are
 *   unacknowledged or `ackDelayMs` after the first of them, whichever is first.
 * - **Topics.** Every event of the client's own payments and orders arrives
 *   without subscribing; `unsubscribe("payment:pay_…")` mutes one and
 *   `subscribe` un-mutes it. Both survive reconnects (re-sent after each
 *   `welcome`; events of a muted topic replayed before that are not handed over).
 *
 * @example
 * import { PaycastRealtime } from "https://paycast.example/static/paycast-realtime.js";
 * const rt = new PaycastRealtime({ getToken: ({ deviceId }) => fetch("/paycast-token?device=" + deviceId).then((r) => r.json()) });
 * rt.onPaymentSucceeded((payment) => show(payment.id + " paid"));
 * rt.start();
 *
 * @module paycast-realtime
 */

/** @typedef {{token: string, expires_at?: string | number}} TokenGrant  The body of `POST /v1/realtime/tokens` (ISO 8601 `expires_at`; unix seconds accepted), or just the token. */
/** @typedef {(context: {deviceId: string}) => (string | TokenGrant | Promise<string | TokenGrant>)} GetToken */
/** @typedef {{id: string, object: string, type: string, seq?: number, created_at?: string, data?: any}} PaycastEvent */
/** @typedef {{seq: number, topic: string | null, event: PaycastEvent}} Delivered  One `event` frame as handed to the app. */
/** @typedef {"idle" | "connecting" | "open" | "waiting" | "revoked" | "stopped"} State */
/** @typedef {{baseMs: number, maxMs: number}} BackoffOptions */
/**
 * @typedef {{setTimeout: (fn: () => void, ms: number) => any, clearTimeout: (handle: any) => void, now: () => number}} Clock
 * The timers the client uses (tests pass their own).
 */

export const CLOSE_SLOW_CONSUMER = 1013;
export const CLOSE_DEVICE_REVOKED = 4001;
const TOPIC = /^(payment|order):[^\s]+$/;
const TOKEN_SKEW_MS = 5000;

/** @type {Clock} */
const REAL_CLOCK = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
  now: () => Date.now(),
};

/**
 * How long to wait before reconnect attempt `attempt` (0-based): full jitter,
 * uniform in [0, min(maxMs, baseMs·2^attempt)).
 *
 * @param {number} attempt  failed attempts since the last successful connection
 * @param {BackoffOptions} options
 * @param {() => number} [random]  uniform in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, { baseMs, maxMs }, random = Math.random) {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/**
 * Batches acknowledgements: `delivered(seq)` for each event handed to the app;
 * the highest seq is sent once `count` are pending or `delayMs` after the first.
 */
export class AckBatcher {
  /**
   * @param {{count: number, delayMs: number, send: (seq: number) => void, clock?: Clock}} options
   */
  constructor({ count, delayMs, send, clock = REAL_CLOCK }) {
    this.count = count;
    this.delayMs = delayMs;
    this.send = send;
    this.clock = clock;
    /** @type {number} highest seq delivered and not yet acknowledged (0: none) */
    this.pendingSeq = 0;
    this.pending = 0;
    this.timer = null;
  }

  /** @param {number} seq  an event just handed to the app */
  delivered(seq) {
    this.pendingSeq = Math.max(this.pendingSeq, seq);
    this.pending += 1;
    if (this.pending >= this.count) this.flush();
    else if (this.timer === null) this.timer = this.clock.setTimeout(() => { this.timer = null; this.flush(); }, this.delayMs);
  }

  /** Send the pending ack now (if any). */
  flush() {
    this.cancel();
    if (this.pending === 0) return;
    const seq = this.pendingSeq;
    this.pending = 0;
    this.pendingSeq = 0;
    this.send(seq);
  }

  /** Forget the timer (the connection is gone; the next connection resumes from after_seq anyway). */
  cancel() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  /** Drop what is pending without sending it. */
  reset() {
    this.cancel();
    this.pending = 0;
    this.pendingSeq = 0;
  }
}

/**
 * The ordering rule: an event is handed over only if its seq is above the last
 * one handed over. Seqs may skip (events of muted topics or other devices are
 * not sent), so a gap is not an error; a repeat or a step back is a duplicate.
 */
export class SeqGate {
  /** @param {number | null} lastSeq  the last seq handed to the app (null: none yet) */
  constructor(lastSeq = null) {
    this.lastSeq = lastSeq;
  }

  /**
   * @param {number} seq
   * @returns {boolean} true: hand it over (and it becomes the last seq)
   */
  admit(seq) {
    if (!Number.isSafeInteger(seq) || seq < 1) return false;
    if (this.lastSeq !== null && seq <= this.lastSeq) return false;
    this.lastSeq = seq;
    return true;
  }
}

/**
 * The default WebSocket URL: `/v1/realtime` on the server this module was loaded from.
 * @returns {string | null}
 */
function defaultUrl() {
  try {
    const url = new URL("/v1/realtime", import.meta.url);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  } catch {
    return null;
  }
}

/**
 * When a token expires, in ms since the epoch: `expires_at` as the API returns it (an ISO 8601
 * string) or as unix seconds; null when absent or unreadable (then only a refused handshake
 * makes the client ask for a new token).
 * @param {unknown} value
 * @returns {number | null}
 */
export function expiryMs(value) {
  if (typeof value === "number" && Number.isFinite(value)) return value * 1000;
  if (typeof value === "string") {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? null : ms;
  }
  return null;
}

/** @returns {string} a new random device id */
function newDeviceId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return "dev_" + c.randomUUID();
  return "dev_" + Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/**
 * The client. Create one per page (or per signed-in user), register handlers, `start()`.
 */
export class PaycastRealtime {
  /**
   * @param {object} options
   * @param {GetToken} options.getToken  returns a token for `deviceId` (or `{token, expires_at}`)
   * @param {string} [options.url]  `ws(s)://host/v1/realtime`; default: the server this module came from
   * @param {string} [options.deviceId]  default: kept in `storage`, else a new random id
   * @param {number} [options.afterSeq]  resume after this seq (default: from `storage`, else live only)
   * @param {Storage | null} [options.storage]  where to keep the device id and last seq (e.g. `localStorage`); default none
   * @param {string} [options.storageKey]  key prefix in `storage` (default `"paycast-realtime"`)
   * @param {Partial<BackoffOptions>} [options.backoff]  default `{baseMs: 500, maxMs: 30000}`
   * @param {number} [options.ackCount]  ack after this many events (default 20)
   * @param {number} [options.ackDelayMs]  or this long after the first unacked one (default 1000)
   * @param {number} [options.idleTimeoutMs]  replace a socket silent this long (default 60000)
   * @param {typeof WebSocket} [options.WebSocket]  the WebSocket class (default the global one)
   * @param {Clock} [options.clock]
   * @param {() => number} [options.random]
   */
  constructor(options) {
    if (!options || typeof options.getToken !== "function") throw new TypeError("PaycastRealtime: getToken is required");
    this.url = options.url || defaultUrl();
    if (!this.url) throw new TypeError("PaycastRealtime: url is required (ws://host/v1/realtime)");
    this.getToken = options.getToken;
    this.storage = options.storage || null;
    this.storageKey = options.storageKey || "paycast-realtime";
    this.deviceId = options.deviceId || this._load("device") || newDeviceId();
    this._save("device", this.deviceId);
    const stored = this._load("seq:" + this.deviceId);
    const after = options.afterSeq ?? (stored !== null ? Number(stored) : null);
    this.gate = new SeqGate(Number.isSafeInteger(after) && after >= 0 ? after : null);
    this.backoff = { baseMs: 500, maxMs: 30000, ...(options.backoff || {}) };
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60000;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.clock = options.clock || REAL_CLOCK;
    this.random = options.random || Math.random;
    this.acks = new AckBatcher({ count: options.ackCount ?? 20, delayMs: options.ackDelayMs ?? 1000, clock: this.clock,
      send: (seq) => this._send({ type: "ack", seq }) });
    /** @type {State} */
    this.state = "idle";
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
    /** @type {Set<string>} topics unsubscribed from (muted) */
    this.muted = new Set();
    this.socket = null;
    this.attempt = 0;
    this.token = null;
    /** @type {number | null} ms since the epoch */
    this.tokenExpiresAt = null;
    this.freshTokenNeeded = true;
    this.timer = null;
    this.idleTimer = null;
    this.generation = 0;
    this._onOnline = () => { if (this.state === "waiting") this._connectNow(); };
  }

  /** @returns {number | null} the last seq handed to the app (what a reconnect resumes after) */
  get lastSeq() {
    return this.gate.lastSeq;
  }

  /**
   * Listen. Names: `"event"` (every event, `(delivered) => …`), an event type
   * (`"payment.succeeded"`: `(event, delivered) => …`), `"state"`, `"welcome"`,
   * `"revoked"`, `"error"` (`{code, message}` error frames and handler exceptions),
   * `"reconnect"` (`{attempt, delayMs, code}`).
   * @param {string} name
   * @param {Function} handler
   * @returns {() => void} removes the handler
   */
  on(name, handler) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(handler);
    return () => this.handlers.get(name)?.delete(handler);
  }

  /** @param {(payment: any, event: PaycastEvent) => void} handler  a payment succeeded */
  onPaymentSucceeded(handler) {
    return this.on("payment.succeeded", (event) => handler(event.data?.object, event));
  }

  /** @param {(payment: any, event: PaycastEvent) => void} handler  a payment failed (`payment.last_error` says why) */
  onPaymentFailed(handler) {
    return this.on("payment.failed", (event) => handler(event.data?.object, event));
  }

  /**
   * @param {(payment: any, nextAction: any, event: PaycastEvent) => void} handler  the customer must act
   *   (3-D Secure, a UPI app): open `nextAction` (`redirect_to_url.url`, or the connector SDK's parameters)
   */
  onPaymentRequiresAction(handler) {
    return this.on("payment.requires_action", (event) => handler(event.data?.object, event.data?.object?.next_action ?? null, event));
  }

  /** Connect (again, after `stop()` or `revoked`). */
  start() {
    if (this.state !== "idle" && this.state !== "stopped" && this.state !== "revoked") return;
    globalThis.addEventListener?.("online", this._onOnline);
    this.attempt = 0;
    this._connectNow();
  }

  /** Close and stay closed (pending acks are sent first). */
  stop() {
    this._shutdown("stopped");
  }

  /**
   * Receive a muted topic's events again (everything of the client's own is received by default).
   * @param {string} topic  `payment:<id>` or `order:<id>`
   */
  subscribe(topic) {
    this._checkTopic(topic);
    this.muted.delete(topic);
    this._send({ type: "subscribe", topic });
  }

  /**
   * Stop receiving a topic's events (kept across reconnects).
   * @param {string} topic  `payment:<id>` or `order:<id>`
   */
  unsubscribe(topic) {
    this._checkTopic(topic);
    this.muted.add(topic);
    this._send({ type: "unsubscribe", topic });
  }

  // ------------------------------------------------------------------ internals

  _checkTopic(topic) {
    if (typeof topic !== "string" || !TOPIC.test(topic)) throw new TypeError("topic must be payment:<id> or order:<id>");
  }

  _emit(name, ...args) {
    for (const handler of [...(this.handlers.get(name) || [])]) {
      try {
        handler(...args);
      } catch (error) {
        if (name === "error") console.error(error);
        else this._emit("error", { code: "handler_failed", message: String(error && error.message || error), error });
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  _load(name) {
    try {
      return this.storage ? this.storage.getItem(this.storageKey + ":" + name) : null;
    } catch {
      return null;  // storage disabled (private mode, quota): memory only
    }
  }

  _save(name, value) {
    try {
      this.storage?.setItem(this.storageKey + ":" + name, String(value));
    } catch {
      // memory only
    }
  }

  _send(frame) {
    const socket = this.socket;
    if (socket && socket.readyState === 1 && this.state === "open") socket.send(JSON.stringify(frame));
  }

  async _token() {
    const expired = this.tokenExpiresAt !== null && this.clock.now() >= this.tokenExpiresAt - TOKEN_SKEW_MS;
    if (this.token && !this.freshTokenNeeded && !expired) return this.token;
    const grant = await this.getToken({ deviceId: this.deviceId });
    if (typeof grant === "string") {
      this.token = grant;
      this.tokenExpiresAt = null;
    } else if (grant && typeof grant.token === "string") {
      this.token = grant.token;
      this.tokenExpiresAt = expiryMs(grant.expires_at);
    } else {
      throw new TypeError("getToken must return a token or {token, expires_at}");
    }
    this.freshTokenNeeded = false;
    return this.token;
  }

  _connectNow() {
    this.clock.clearTimeout(this.timer);
    this.timer = null;
    const generation = ++this.generation;
    this._setState("connecting");
    this._token().then((token) => {
      if (generation !== this.generation) return;
      const url = new URL(this.url);
      url.searchParams.set("token", token);
      if (this.gate.lastSeq !== null) url.searchParams.set("after_seq", String(this.gate.lastSeq));
      this._open(url.toString(), generation);
    }, (error) => {
      if (generation !== this.generation) return;
      this._emit("error", { code: "get_token_failed", message: String(error && error.message || error), error });
      this.freshTokenNeeded = true;
      this._retry(null);
    });
  }

  _open(url, generation) {
    let socket;
    try {
      socket = new this.WebSocket(url);
    } catch (error) {
      this._emit("error", { code: "connect_failed", message: String(error && error.message || error), error });
      this._retry(null);
      return;
    }
    this.socket = socket;
    let welcomed = false;
    this._touch(generation);
    socket.onmessage = (message) => {
      if (generation !== this.generation) return;
      this._touch(generation);
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "welcome") {
        welcomed = true;
        this.attempt = 0;
        this._setState("open");
        for (const topic of this.muted) this._send({ type: "unsubscribe", topic });
        this._emit("welcome", frame);
      } else if (frame.type === "event") {
        this._deliver(frame);
      } else if (frame.type === "ping") {
        this._send({ type: "pong" });
      } else if (frame.type === "error") {
        this._emit("error", { code: frame.code, message: frame.message });
      }
    };
    socket.onclose = (event) => {
      if (generation !== this.generation) return;
      this._dropped(event.code, welcomed);
    };
    socket.onerror = () => {};  // a close always follows; it decides
  }

  /** Hand one event frame to the app, in order, once. */
  _deliver(frame) {
    if (!this.gate.admit(frame.seq)) return;
    this._save("seq:" + this.deviceId, frame.seq);
    if (!(frame.topic && this.muted.has(frame.topic))) {
      /** @type {Delivered} */
      const delivered = { seq: frame.seq, topic: frame.topic ?? null, event: frame.event };
      this._emit("event", delivered);
      if (frame.event && typeof frame.event.type === "string") this._emit(frame.event.type, frame.event, delivered);
    }
    this.acks.delivered(frame.seq);
  }

  /** The socket is alive: restart the silence timer. */
  _touch(generation) {
    this.clock.clearTimeout(this.idleTimer);
    this.idleTimer = this.clock.setTimeout(() => {
      if (generation !== this.generation) return;
      this._dropped(null, this.state === "open");  // silent too long: presumed dead
    }, this.idleTimeoutMs);
  }

  _dropped(code, welcomed) {
    const socket = this.socket;
    this.socket = null;
    this.acks.reset();
    this.clock.clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (socket) {
      socket.onmessage = socket.onclose = socket.onerror = null;
      try { socket.close(); } catch { /* already closed */ }
    }
    if (code === CLOSE_DEVICE_REVOKED) {
      this.freshTokenNeeded = true;  // tokens issued before the deletion are refused from now on
      this._shutdown("revoked");
      this._emit("revoked", { deviceId: this.deviceId });
      return;
    }
    // A handshake that failed may have been a refused token (expired, revoked before we connected).
    if (!welcomed) this.freshTokenNeeded = true;
    this._retry(code);
  }

  _retry(code) {
    const generation = ++this.generation;
    const delayMs = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt += 1;
    this._setState("waiting");
    this._emit("reconnect", { attempt: this.attempt, delayMs, code });
    this.timer = this.clock.setTimeout(() => {
      if (generation === this.generation) this._connectNow();
    }, delayMs);
  }

  _shutdown(state) {
    this.generation += 1;
    this.acks.flush();
    this.acks.reset();
    this.clock.clearTimeout(this.timer);
    this.clock.clearTimeout(this.idleTimer);
    this.timer = this.idleTimer = null;
    globalThis.removeEventListener?.("online", this._onOnline);
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onmessage = socket.onclose = socket.onerror = null;
      try { socket.close(1000); } catch { /* already closed */ }
    }
    this._setState(state);
  }
}

export default PaycastRealtime;
