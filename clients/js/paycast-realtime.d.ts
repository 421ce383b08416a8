// Types of paycast-realtime.js (hand-written; the module's JSDoc says the same).

/** The body of `POST /v1/realtime/tokens` (`expires_at` ISO 8601; unix seconds accepted), or just its token. */
export type TokenGrant = string | { token: string; expires_at?: string | number };
export type GetToken = (context: { deviceId: string }) => TokenGrant | Promise<TokenGrant>;

/** An event of the API (`GET /v1/events` shape) or one published with `POST /v1/realtime/publish`. */
export interface PaycastEvent {
  id?: string;
  object?: "event";
  type: string;
  seq?: number;
  created_at?: string;
  data?: { object?: Payment | Record<string, unknown> } | unknown;
}

/** The fields of a payment snapshot this client's helpers rely on (the API's payment object has more). */
export interface Payment {
  id: string;
  object: "payment";
  status: string;
  amount: number;
  currency: string;
  customer_id?: string | null;
  order_id?: string | null;
  last_error?: { code?: string; message?: string } | null;
  next_action?: NextAction | null;
  [field: string]: unknown;
}

/** What the customer must do to finish a `requires_action` payment. */
export interface NextAction {
  type: string;
  redirect_to_url?: { url: string; return_url?: string | null };
  connector_sdk?: Record<string, unknown>;
  [field: string]: unknown;
}

/** One `event` frame as handed to the app. */
export interface Delivered {
  seq: number;
  topic: string | null;
  event: PaycastEvent;
}

export type State = "idle" | "connecting" | "open" | "waiting" | "revoked" | "stopped";

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export interface RealtimeError {
  code: string;
  message: string;
  error?: unknown;
}

export interface PaycastRealtimeOptions {
  /** Returns a token for `deviceId` (the app's backend calls `POST /v1/realtime/tokens`). */
  getToken: GetToken;
  /** `ws(s)://host/v1/realtime`; default: the server this module was loaded from. */
  url?: string;
  /** Default: kept in `storage`, else a new random id. */
  deviceId?: string;
  /** Resume after this seq; default: from `storage`, else live events only. */
  afterSeq?: number;
  /** Where to keep the device id and the last seq (e.g. `localStorage`). Default: memory only. */
  storage?: Storage | null;
  /** Key prefix in `storage` (default `"paycast-realtime"`). */
  storageKey?: string;
  /** Default `{baseMs: 500, maxMs: 30000}`. */
  backoff?: Partial<BackoffOptions>;
  /** Acknowledge after this many events (default 20)… */
  ackCount?: number;
  /** …or this long after the first unacknowledged one (default 1000 ms). */
  ackDelayMs?: number;
  /** Replace a socket that was silent this long (default 60000 ms; the server pings every 20 s). */
  idleTimeoutMs?: number;
  WebSocket?: typeof WebSocket;
  clock?: Clock;
  random?: () => number;
}

export const CLOSE_SLOW_CONSUMER: 1013;
export const CLOSE_DEVICE_REVOKED: 4001;

/** `expires_at` (ISO 8601 string or unix seconds) in ms since the epoch; null if absent or unreadable. */
export function expiryMs(value: unknown): number | null;

/** Full jitter: uniform in [0, min(maxMs, baseMs * 2 ** attempt)). */
export function backoffDelay(attempt: number, options: BackoffOptions, random?: () => number): number;

export class AckBatcher {
  constructor(options: { count: number; delayMs: number; send: (seq: number) => void; clock?: Clock });
  readonly pendingSeq: number;
  readonly pending: number;
  delivered(seq: number): void;
  flush(): void;
  cancel(): void;
  reset(): void;
}

export class SeqGate {
  constructor(lastSeq?: number | null);
  readonly lastSeq: number | null;
  admit(seq: number): boolean;
}

export class PaycastRealtime {
  constructor(options: PaycastRealtimeOptions);
  readonly deviceId: string;
  readonly state: State;
  /** The last seq handed to the app (what a reconnect resumes after). */
  readonly lastSeq: number | null;
  on(name: "event", handler: (delivered: Delivered) => void): () => void;
  on(name: "state", handler: (state: State) => void): () => void;
  on(name: "welcome", handler: (frame: { type: "welcome"; connection_id: string; client_id: string; device_id: string | null }) => void): () => void;
  on(name: "revoked", handler: (info: { deviceId: string }) => void): () => void;
  on(name: "error", handler: (error: RealtimeError) => void): () => void;
  on(name: "reconnect", handler: (info: { attempt: number; delayMs: number; code: number | null }) => void): () => void;
  /** An event type, e.g. `"refund.succeeded"`. */
  on(name: string, handler: (event: PaycastEvent, delivered: Delivered) => void): () => void;
  onPaymentSucceeded(handler: (payment: Payment, event: PaycastEvent) => void): () => void;
  onPaymentFailed(handler: (payment: Payment, event: PaycastEvent) => void): () => void;
  onPaymentRequiresAction(handler: (payment: Payment, nextAction: NextAction | null, event: PaycastEvent) => void): () => void;
  start(): void;
  stop(): void;
  subscribe(topic: `payment:${string}` | `order:${string}`): void;
  unsubscribe(topic: `payment:${string}` | `order:${string}`): void;
}

export default PaycastRealtime;
