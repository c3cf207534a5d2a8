/** The REST API client (errors with their stable codes, downloads) and the live WebSocket that reconnects with back-off. */
import { API, POLICY_VIOLATION, RECONNECT_MAX_MS, RECONNECT_MIN_MS } from "./settings.js";
import { html } from "./format.js";
import { session, signOut } from "./app.js";

// ---------------------------------------------------------------- the REST API

/** An error answered by the API (or met reaching it), with its stable code and a sentence. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The error a refused answer carries (its JSON body parsed, if any); a 401 signs out (the key is no good any more). */
export function refusal(response, body) {
  const error = body && body.error ? body.error : {};
  const failure = new ApiError(response.status, error.code || "http_error",
    error.message || `The server answered ${response.status} ${response.statusText}.`);
  if (response.status === 401) signOut(`Your key was refused (${failure.message}). Sign in again.`);
  return failure;
}

/** Fetch from the API with the signed-in key, or say plainly that the server cannot be reached. */
export async function reach(path, init) {
  try {
    return await fetch(API + path, init);
  } catch (err) {
    throw new ApiError(0, "unreachable", "The server cannot be reached; check that it is running, then reload.");
  }
}

/** Call the API with the signed-in key. */
export async function api(path, options = {}) {
  const headers = { "X-API-Key": session.key || "", Accept: "application/json" };
  const init = { method: options.method || "GET", headers };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await reach(path, init);
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) throw refusal(response, body);
  return body;
}

/**
 * Fetch a file from the API with the signed-in key (a plain link cannot carry it) and hand it to
 * the browser as a download under the name the server gives; returns that name.
 */
export async function download(path) {
  const response = await reach(path, { headers: { "X-API-Key": session.key || "" } });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    throw refusal(response, body);
  }
  const blob = await response.blob();
  const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  const name = named ? named[1] : path.split("/").pop();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return name;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) search.set(name, String(value));
  }
  return search.toString();
}

/** What to show for a failed load: the API's sentence, in a box. */
export function errorBox(err) {
  const message = err instanceof ApiError ? err.message : `Something went wrong in the page: ${err.message}`;
  return html`<p class="form-error">${message}</p>`;
}

// ---------------------------------------------------------------- the live socket

/**
 * The live WebSocket, reconnected with exponential back-off (1 s doubling to 30 s) whenever
 * it drops. `onMessage` gets each parsed message, `onState` each change of state:
 * "connecting", "live", "reconnecting" (with the delay) or "refused" (bad credentials: no retry).
 */
export class LiveConnection {
  constructor(key, onMessage, onState) {
    this.key = key;
    this.onMessage = onMessage;
    this.onState = onState;
    this.delay = RECONNECT_MIN_MS;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.open("connecting");
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "signed out");
    this.socket = null;
  }

  open(state) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.onState(state);
    const socket = new WebSocket(`${scheme}://${location.host}${API}/live`);
    this.socket = socket;
    let refused = false;
    socket.onopen = () => socket.send(JSON.stringify({ type: "auth", key: this.key }));
    socket.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (err) { return; }
      if (message.type === "hello") {
        this.delay = RECONNECT_MIN_MS;
        this.onState("live");
      } else if (message.type === "error") {
        refused = true;
      }
      this.onMessage(message);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      if (refused || event.code === POLICY_VIOLATION) {
        this.onState("refused");
        return;
      }
      const wait = this.delay;
      this.delay = Math.min(this.delay * 2, RECONNECT_MAX_MS);
      this.onState("reconnecting", wait);
      this.timer = setTimeout(() => this.open("reconnecting"), wait);
    };
  }
}
