// One thread's WebSocket, kept alive: it reconnects on close, network loss, `online`,
// a return to the tab and after sleep, with capped exponential backoff and jitter.
// What the frames mean is the caller's business (thread.js); this module only keeps
// a socket open and reports its state.

import { FINAL_CLOSE_CODES as FINAL_CLOSES } from "./protocol.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15_000;
// A ping every so often while the tab is visible; a socket that answers nothing within
// PONG_TIMEOUT_MS is dead even though the browser has not noticed (a sleep, a new network).
const PING_INTERVAL_MS = 25_000;
const PONG_TIMEOUT_MS = 8_000;
// A clock that jumps this much further than the tick interval means the machine slept.
const TICK_MS = 2_000;
const SLEEP_GAP_MS = 10_000;
// Closes that no retry can fix: not signed in, not allowed, no such thread (DESIGN.md §4).
const FINAL_CLOSE_CODES = new Set(FINAL_CLOSES);
const CLOSE_RESTART = 4000; // ours: "reconnecting on purpose" (a gap, a dead socket, going offline)

export class ThreadSocket {
  /**
   * @param {object} options
   * @param {() => string} options.url  the URL to connect to now (it carries the caller's cursor)
   * @param {(frame: object) => void} options.onFrame  every frame, parsed
   * @param {(state: string, detail?: object) => void} options.onState
   *   "connecting" | "open" | "reconnecting" {retryAt} | "offline" | "closed" {code}
   */
  constructor({ url, onFrame, onState }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.pongTimer = null;
    this.lastTick = Date.now();
    this.stopped = false;
  }

  start() {
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => this.restart("offline"));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.checkAlive();
    });
    // pageshow covers a page restored from the back/forward cache with a dead socket.
    window.addEventListener("pageshow", (event) => event.persisted && this.reconnectNow());
    setInterval(() => this.tick(), TICK_MS);
    setInterval(() => document.visibilityState === "visible" && this.ping(), PING_INTERVAL_MS);
    this.connect();
  }

  /** Send a frame now; return false when no socket is open. */
  send(frame) {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Drop this socket and connect again at once, from the caller's cursor (after a gap, say). */
  restart(reason) {
    this.drop(reason);
    if (navigator.onLine) this.connect();
    else this.scheduleRetry();
  }

  /** The caller is caught up on this socket: later failures start backing off from scratch. */
  caughtUp() {
    this.attempt = 0;
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.onState("connecting");
    const socket = new WebSocket(this.url());
    this.socket = socket;
    // Frames of a socket we have already given up on must not be applied.
    socket.addEventListener("open", () => socket === this.socket && this.onState("open"));
    socket.addEventListener("message", (message) => {
      if (socket !== this.socket) return;
      clearTimeout(this.pongTimer);
      this.onFrame(JSON.parse(message.data));
    });
    socket.addEventListener("close", (close) => {
      if (socket !== this.socket) return;
      this.socket = null;
      clearTimeout(this.pongTimer);
      if (FINAL_CLOSE_CODES.has(close.code)) {
        this.stopped = true;
        this.onState("closed", { code: close.code });
      } else {
        this.scheduleRetry();
      }
    });
  }

  drop(reason) {
    const socket = this.socket;
    this.socket = null;
    clearTimeout(this.pongTimer);
    clearTimeout(this.retryTimer);
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(CLOSE_RESTART, reason);
  }

  scheduleRetry() {
    if (this.stopped) return;
    // "Equal jitter": half the capped exponential delay, plus up to as much again at random,
    // so tabs that lost the same server do not all come back in the same instant.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    if (navigator.onLine) this.onState("reconnecting", { retryAt: Date.now() + delay });
    else this.onState("offline");
  }

  reconnectNow() {
    if (this.stopped || this.socket) return;
    this.attempt = 0;
    this.connect();
  }

  ping() {
    if (!this.send({ type: "ping" })) return;
    // Any frame clears this timer: the server answers a ping with a pong.
    clearTimeout(this.pongTimer);
    this.pongTimer = setTimeout(() => this.restart("no answer to ping"), PONG_TIMEOUT_MS);
  }

  checkAlive() {
    if (this.socket?.readyState === WebSocket.OPEN) this.ping();
    else if (!this.socket) this.reconnectNow();
  }

  tick() {
    const now = Date.now();
    if (now - this.lastTick > TICK_MS + SLEEP_GAP_MS) this.checkAlive();
    this.lastTick = now;
  }
}
