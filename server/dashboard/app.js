/*
 * The smart-meter billing dashboard: one page, routed by the URL fragment.
 *
 *   #/                    the fleet: every meter and its open bill, grid and consumption alerts
 *   #/meter/<address>     one meter: bill breakdown, a day's consumption, bills, alerts, threshold
 *   #/messages            the operator: every account's conversation; a customer: theirs with the operator
 *   #/messages/<account>  the operator: one account's conversation
 *   #key=<api key>        sign in with a key (it is kept in localStorage and removed from the URL)
 *
 * Data comes from the REST API (/api/v1, key in the X-API-Key header) and stays current through
 * the live WebSocket (/api/v1/live, key in its first message, never in the URL, which logs keep),
 * which reconnects with back-off when it drops. A
 * customer's key sees one meter, so a customer goes straight to that meter's page (or to their
 * messages).
 *
 * Everything taken from data (meter names, alert messages, error messages) goes into the page
 * through the `html` template tag, which escapes it.
 *
 * This module is the entry (index.html loads it as a native ES module; no build step): the
 * session, the page frame and the routing. The rest is one module a concern: settings.js,
 * format.js (escaping and formatting), api.js (the REST client and the live socket), widgets.js,
 * fleet.js, meter.js with meter-charts.js and meter-history.js, and messages.js.
 */
import { KEY_STORAGE } from "./settings.js";
import { sameAddress } from "./format.js";
import { api, LiveConnection } from "./api.js";
import { FleetView } from "./fleet.js";
import { MeterView } from "./meter.js";
import { inbox, MessagesView } from "./messages.js";

// ---------------------------------------------------------------- session and page frame

export const session = { key: null, me: null, live: null, view: null };
export const $ = (id) => document.getElementById(id);

export function showBanner(message) {
  const banner = $("banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

export function setLiveState(state, wait) {
  const labels = {
    connecting: "connecting…",
    live: "live",
    reconnecting: wait ? `reconnecting… (in ${Math.round(wait / 1000)} s)` : "reconnecting…",
    refused: "not live: key refused",
    offline: "offline",
  };
  $("live-state").dataset.state = state;
  $("live-label").textContent = labels[state] || state;
}

export function showSignIn(message) {
  $("session").hidden = true;
  const main = $("main");
  main.replaceChildren($("sign-in-template").content.cloneNode(true));
  const error = $("sign-in-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) signIn(key);
  });
  $("api-key").focus();
}

export function signOut(message) {
  localStorage.removeItem(KEY_STORAGE);
  if (session.live) session.live.stop();
  if (session.view) session.view.destroy();
  Object.assign(session, { key: null, me: null, live: null, view: null });
  inbox.clear();
  setLiveState("offline");
  showBanner("");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  showSignIn(message);
}

export async function signIn(key) {
  session.key = key;
  let me;
  try {
    me = await api("/auth/me");
  } catch (err) {
    if (err.status !== 401) {
      session.key = null;
      showSignIn(err.message);
    }
    return;
  }
  localStorage.setItem(KEY_STORAGE, key);
  session.me = me;
  $("session").hidden = false;
  $("role").textContent = me.role === "operator" ? "operator" : "customer";
  session.live = new LiveConnection(key, onLive, onLiveState);
  session.live.start();
  inbox.refresh();
  route();
}

function onLiveState(state, wait) {
  setLiveState(state, wait);
  if (state === "refused") showBanner("Live updates were refused for this key; sign out and in again.");
}

function onLive(message) {
  if (message.type === "error") {
    showBanner(`Live updates stopped: ${message.message}`);
    return;
  }
  if (message.type === "hello") showBanner("");
  inbox.onLive(message);
  if (session.view) session.view.onLive(message);
}

// ---------------------------------------------------------------- routing

/** Show the view the URL fragment names (a customer only ever sees their own meter). */
export function route() {
  if (!session.me) return;
  const hash = location.hash || "#/";
  const match = /^#\/meter\/(0x[0-9a-fA-F]{40})$/.exec(hash);
  const messages = /^#\/messages(?:\/(0x[0-9a-fA-F]{64}))?$/.exec(hash);
  if (session.me.role !== "operator" && !messages && (!match || !sameAddress(match[1], session.me.meter))) {
    location.replace(`#/meter/${session.me.meter}`);
    return;
  }
  if (session.view) session.view.destroy();
  const main = $("main");
  main.replaceChildren();
  $("messages-link").classList.toggle("current", Boolean(messages));
  session.view = messages ? new MessagesView(messages[1] || null)
    : match ? new MeterView(match[1]) : new FleetView();
  session.view.mount(main);
  window.scrollTo(0, 0);
}

// ---------------------------------------------------------------- start

/** Sign in with a key given as `#key=...`, dropping it from the address bar (and history). */
function keyFromUrl() {
  const found = /^#key=([^&]+)/.exec(location.hash);
  if (!found) return false;
  history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  if (session.live) session.live.stop();
  if (session.view) session.view.destroy();
  Object.assign(session, { live: null, view: null, me: null });
  signIn(decodeURIComponent(found[1]));
  return true;
}

/** Sign in with the key in the URL, else the one kept from last time, else ask for one. */
function start() {
  $("sign-out").addEventListener("click", (event) => {
    event.preventDefault();
    signOut("");
  });
  window.addEventListener("hashchange", () => { if (!keyFromUrl()) route(); });
  if (keyFromUrl()) return;
  const stored = localStorage.getItem(KEY_STORAGE);
  if (stored) signIn(stored);
  else showSignIn("");
}

start();
