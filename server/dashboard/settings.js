/** The dashboard's constants: where the API is, and the timings of the live view. */
export const API = "/api/v1";
export const KEY_STORAGE = "smartmeter.apiKey";
/** First and longest wait before reconnecting the live socket (doubles each failed try). */
export const RECONNECT_MIN_MS = 1_000;
export const RECONNECT_MAX_MS = 30_000;
/** How long a changed cell stays highlighted (matches the `flash` animation in style.css). */
export const HIGHLIGHT_MS = 2_000;
/** Bursts of live updates (a batch of readings) reload a meter's chart once, after this pause. */
export const RELOAD_DELAY_MS = 400;
export const RECENT_ALERTS = 10;
export const HOUR_MS = 3_600_000;
/** WebSocket close code the server uses for refused credentials: reconnecting will not help. */
export const POLICY_VIOLATION = 1008;
export const MICROPENCE_PER_PENNY = 1_000_000;
