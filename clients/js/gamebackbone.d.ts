// Types of gamebackbone.js (the module is plain JavaScript: no build step).

export declare const MsgType: Readonly<{
  LOGIN_REQ: 1; LOGIN_RES: 2; RECONNECT_REQ: 3; RECONNECT_RES: 4; LOGOUT_REQ: 5;
  LOGOUT_RES: 6; PING_REQ: 7; PONG_RES: 8; ECHO_REQ: 9; ECHO_RES: 10; MOVE_REQ: 11;
  MOVE_RES: 12; WHISPER_REQ: 13; WHISPER_RES: 14; ERROR_RES: 100; KICKOUT_NTF: 200;
  WHISPER_NTF: 201;
}>;
export declare const FIRST_NOTIFICATION_TYPE: 200;
export declare const HEADER_BYTES: 12;
export declare const NO_RESUME_KICKS: ReadonlySet<string>;

export interface Frame {
  msgType: number;
  flags: number;
  sequenceId: number;
  payload: Record<string, unknown>;
}
export declare function encodeFrame(msgType: number, sequenceId: number,
                                    payload?: Record<string, unknown>): Uint8Array;
export declare function decodeFrame(data: ArrayBuffer | Uint8Array): Frame;

export declare class ProtocolViolation extends Error {}
export declare class RequestError extends Error {
  readonly code: string;
  readonly payload: Record<string, unknown>;
}
export declare class RequestTimeout extends Error {}
export declare class ClientClosed extends Error {}

export interface PlayerState { x: number; y: number; moves: number; }
export interface SessionResult {
  ok: true;
  result: string;
  user_id: number;
  session_id: number;
  reconnect_key: string;
  node_id: number;
  last_sequence_id: number;
  state: PlayerState;
}
export type Status = "connecting" | "online" | "reconnecting" | "offline" | "kicked";

export declare class ClientEvent<T = unknown> extends Event {
  readonly detail: T;
}

export interface GameClientEvents {
  status: ClientEvent<{ status: Status }>;
  reconnected: ClientEvent<SessionResult>;
  whisper: ClientEvent<{ from_user_id: number; text: string }>;
  kicked: ClientEvent<{ reason: string }>;
  push: ClientEvent<{ msgType: number; payload: Record<string, unknown> }>;
  sessionlost: ClientEvent<{ reason: string }>;
  error: ClientEvent<{ reason: string }>;
}

export interface GameClientOptions {
  /** Gateways' WebSocket URLs (ws://host:5080/), tried in turn when resuming. */
  urls?: string[];
  url?: string;
  requestTimeoutMs?: number;
  autoReconnect?: boolean;
  reconnectTimeoutMs?: number;
  maxFrameBytes?: number;
  /** PING when nothing was sent for this long while logged in (default 10000; 0: never). */
  keepAliveMs?: number;
  WebSocket?: typeof WebSocket;
  timers?: Partial<{
    setTimeout(fn: () => void, ms: number): unknown;
    clearTimeout(handle: unknown): void;
    now(): number;
    random(): number;
  }>;
}

export declare class GameClient extends EventTarget {
  constructor(options: GameClientOptions);
  readonly urls: string[];
  userId: number | null;
  sessionId: number | null;
  reconnectKey: string | null;
  state: PlayerState | null;
  status: Status;
  reconnects: number;

  login(userId: number, options?: { token?: string }): Promise<SessionResult>;
  request(msgType: number, payload?: Record<string, unknown>): Promise<Record<string, unknown>>;
  echo<T extends Record<string, unknown>>(obj: T): Promise<T>;
  move(x: number, y: number): Promise<PlayerState>;
  whisper(toUserId: number, text: string): Promise<{ delivered: boolean }>;
  ping(): Promise<{ client_time_ms: number; server_time_ms: number; rtt_ms: number }>;
  logout(): Promise<{ ok: true }>;
  close(): void;

  addEventListener<K extends keyof GameClientEvents>(
    type: K, listener: (event: GameClientEvents[K]) => void,
    options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
                   options?: boolean | AddEventListenerOptions): void;
}
