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
 */
"use strict";

(() => {
  // ---------------------------------------------------------------- settings

  const API = "/api/v1";
  const KEY_STORAGE = "smartmeter.apiKey";
  /** First and longest wait before reconnecting the live socket (doubles each failed try). */
  const RECONNECT_MIN_MS = 1_000;
  const RECONNECT_MAX_MS = 30_000;
  /** How long a changed cell stays highlighted (matches the `flash` animation in style.css). */
  const HIGHLIGHT_MS = 2_000;
  /** Bursts of live updates (a batch of readings) reload a meter's chart once, after this pause. */
  const RELOAD_DELAY_MS = 400;
  const RECENT_ALERTS = 10;
  const HOUR_MS = 3_600_000;
  /** WebSocket close code the server uses for refused credentials: reconnecting will not help. */
  const POLICY_VIOLATION = 1008;
  const MICROPENCE_PER_PENNY = 1_000_000;

  // ---------------------------------------------------------------- escaping

  /** A piece of HTML that is already safe (built by `html`), inserted as it is. */
  class SafeHtml {
    constructor(text) { this.text = text; }
    toString() { return this.text; }
  }

  function escapeHtml(value) {
    return String(value ?? "").replace(/[&<>"']/g, (c) => (
      { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function insert(value) {
    if (value instanceof SafeHtml) return value.text;
    if (Array.isArray(value)) return value.map(insert).join("");
    return escapeHtml(value);
  }

  /** Template tag: every interpolated value is escaped unless it is SafeHtml (or a list of it). */
  function html(strings, ...values) {
    let out = strings[0];
    values.forEach((value, i) => { out += insert(value) + strings[i + 1]; });
    return new SafeHtml(out);
  }

  // ---------------------------------------------------------------- formatting

  const dateTimeFormat = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium", timeStyle: "short" });
  const dateFormat = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium" });
  const hourFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

  /** Micropence as pounds and pence, half a penny rounding up (as the server's statements do). */
  function pounds(micropence) {
    const value = Number(micropence);
    const sign = value < 0 ? "-" : "";  // in credit: the amount rounds as common.tariff.format_pounds does
    const abs = Math.floor((Math.abs(value) + MICROPENCE_PER_PENNY / 2) / MICROPENCE_PER_PENNY);
    return `${sign}£${Math.floor(abs / 100).toLocaleString("en-GB")}.${String(abs % 100).padStart(2, "0")}`;
  }

  /** The tariff version in force now (the list is newest first; versions may be scheduled ahead). */
  function inForce(tariffs) {
    const now = Date.now();
    return tariffs.find((t) => new Date(t.effective_from).getTime() <= now) || tariffs[tariffs.length - 1] || null;
  }

  function describePricing(pricing) {
    if (!pricing) return "—";
    if (pricing.kind === "banded") return "time of use";
    if (pricing.kind === "day_ahead") return "day-ahead";
    return `${pencePerUnit(pricing.rate)} p/kWh`;
  }

  function kwh(wh, digits = 2) {
    return (Number(wh) / 1000).toLocaleString("en-GB", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  function pencePerUnit(millipence) {
    return (Number(millipence) / 1000).toLocaleString("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 3 });
  }

  function when(iso) { return iso ? dateTimeFormat.format(new Date(iso)) : "—"; }
  function day(iso) { return iso ? dateFormat.format(new Date(iso)) : "—"; }
  function shortAddress(address) { return `${address.slice(0, 6)}…${address.slice(-4)}`; }
  function sameAddress(a, b) { return String(a).toLowerCase() === String(b).toLowerCase(); }

  /** A local calendar date as YYYY-MM-DD. */
  function isoDate(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  }

  /** The local midnight starting a YYYY-MM-DD date, and the one after it. */
  function dayBounds(value) {
    const [y, m, d] = value.split("-").map(Number);
    return [new Date(y, m - 1, d), new Date(y, m - 1, d + 1)];
  }

  function badge(text, kind) { return html`<span class="badge badge-${kind}">${text}</span>`; }
  function statusBadge(status) { return badge(status, status === "active" ? "ok" : "muted"); }
  function connectedBadge(connected) {
    return connected ? badge("connected", "ok") : badge("not connected", "muted");
  }
  /** A bill whose newest reading is in a block not final yet: a reorganisation may still change it. */
  function provisionalBadge(bill) {
    return bill.final === false
      ? html` <span class="badge badge-warning provisional" title="its newest reading is in a block not final yet">provisional</span>`
      : "";
  }

  // ---------------------------------------------------------------- the REST API

  /** An error answered by the API (or met reaching it), with its stable code and a sentence. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** The error a refused answer carries (its JSON body parsed, if any); a 401 signs out (the key is no good any more). */
  function refusal(response, body) {
    const error = body && body.error ? body.error : {};
    const failure = new ApiError(response.status, error.code || "http_error",
      error.message || `The server answered ${response.status} ${response.statusText}.`);
    if (response.status === 401) signOut(`Your key was refused (${failure.message}). Sign in again.`);
    return failure;
  }

  /** Fetch from the API with the signed-in key, or say plainly that the server cannot be reached. */
  async function reach(path, init) {
    try {
      return await fetch(API + path, init);
    } catch (err) {
      throw new ApiError(0, "unreachable", "The server cannot be reached; check that it is running, then reload.");
    }
  }

  /** Call the API with the signed-in key. */
  async function api(path, options = {}) {
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
  async function download(path) {
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

  function query(params) {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined && value !== null) search.set(name, String(value));
    }
    return search.toString();
  }

  /** What to show for a failed load: the API's sentence, in a box. */
  function errorBox(err) {
    const message = err instanceof ApiError ? err.message : `Something went wrong in the page: ${err.message}`;
    return html`<p class="form-error">${message}</p>`;
  }

  // ---------------------------------------------------------------- the live socket

  /**
   * The live WebSocket, reconnected with exponential back-off (1 s doubling to 30 s) whenever
   * it drops. `onMessage` gets each parsed message, `onState` each change of state:
   * "connecting", "live", "reconnecting" (with the delay) or "refused" (bad credentials: no retry).
   */
  class LiveConnection {
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

  // ---------------------------------------------------------------- session and page frame

  const session = { key: null, me: null, live: null, view: null };
  const $ = (id) => document.getElementById(id);

  function showBanner(message) {
    const banner = $("banner");
    banner.textContent = message || "";
    banner.hidden = !message;
  }

  function setLiveState(state, wait) {
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

  function showSignIn(message) {
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

  function signOut(message) {
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

  async function signIn(key) {
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
  function route() {
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

  /** Replace an element's contents with new HTML, highlighting it when it changed. */
  function updateCell(element, content, flash = true) {
    const text = String(content);
    if (element.dataset.html === text) return;
    const first = element.dataset.html === undefined;
    element.innerHTML = text;
    element.dataset.html = text;
    if (flash && !first) {
      element.classList.remove("flash");
      void element.offsetWidth;  // restart the animation
      element.classList.add("flash");
      setTimeout(() => element.classList.remove("flash"), HIGHLIGHT_MS);
    }
  }

  function alertItem(alert) {
    const ends = alert.cleared_at ? `cleared ${when(alert.cleared_at)}` : `until ${when(alert.expires_at)}`;
    return html`<li class="alert alert-${alert.severity}">
      ${badge(alert.severity, alert.severity)}
      <span class="alert-message">${alert.message}</span>
      <span class="muted">${alert.region || "all regions"} · ${alert.kind} · raised ${when(alert.raised_at)}, ${ends}</span>
    </li>`;
  }

  function consumptionItem(alert, withMeter) {
    const kind = alert.kind === "hourly_limit" ? "over hourly limit" : "sudden jump";
    const power = alert.power_w > 0 ? ` · ${Number(alert.power_w).toLocaleString("en-GB")} W` : "";
    const meter = withMeter
      ? html`<a href="#/meter/${alert.meter}">${meterName(alert.meter)}</a> · `
      : "";
    return html`<li class="alert alert-warning">
      ${badge(kind, "warning")}
      <span class="alert-message">${alert.message}</span>
      <span class="muted">${meter}${when(alert.at)}${power}</span>
    </li>`;
  }

  /** Where a meter's state stands: (billing period, last reading), to tell older from newer. */
  function progress(meter) {
    return [meter.open_bill.period_id, meter.last_reading ? meter.last_reading.seq : 0];
  }

  /**
   * The newer of two states of a meter. A page load answered just before a live bill can arrive
   * just after it; it must not put the older state back.
   */
  function newest(known, loaded) {
    if (!known) return loaded;
    const [a, b] = [progress(known), progress(loaded)];
    return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]) ? known : loaded;
  }

  const knownNames = new Map();
  function meterName(address) { return knownNames.get(address.toLowerCase()) || shortAddress(address); }
  function remember(meter) { knownNames.set(meter.address.toLowerCase(), meter.name || shortAddress(meter.address)); }

  function list(items, empty) {
    return items.length ? html`${items}` : html`<li class="empty muted">${empty}</li>`;
  }

  // ---------------------------------------------------------------- fleet view

  /** Every meter in a table kept current by live messages, with the alerts beside it. */
  class FleetView {
    constructor() {
      this.meters = new Map();
      this.tariff = null;
      this.gridAlerts = [];
      this.consumptionAlerts = [];
      this.alive = true;
      this.loads = 0;
    }

    mount(root) {
      root.innerHTML = html`
        <h1>Fleet</h1>
        <section class="summary" id="fleet-summary"></section>
        <section class="panel">
          <h2>Meters</h2>
          <div id="fleet-error"></div>
          <div class="table-wrap">
            <table class="data" id="fleet-table">
              <thead><tr>
                <th>Meter</th><th>Region</th><th>Status</th><th>Connection</th><th>Last reading</th>
                <th class="num">Period energy (kWh)</th><th class="num">Amount due</th>
              </tr></thead>
              <tbody></tbody>
            </table>
          </div>
        </section>
        <div class="columns">
          <section class="panel">
            <h2>Grid alerts in force</h2>
            <ul class="alerts" id="grid-alerts"></ul>
          </section>
          <section class="panel">
            <h2>Recent consumption alerts</h2>
            <ul class="alerts" id="consumption-alerts"></ul>
          </section>
        </div>`;
      this.load();
    }

    destroy() { this.alive = false; }

    async load() {
      const load = ++this.loads;
      const [meters, grid, consumption, tariffs] = await Promise.allSettled([
        api("/meters"),
        api(`/grid-alerts?${query({ active: true })}`),
        api(`/consumption-alerts?${query({ page_size: RECENT_ALERTS })}`),
        api("/tariffs"),
      ]);
      if (!this.alive || load !== this.loads) return;  // gone, or a newer load is under way
      if (meters.status === "fulfilled") {
        this.meters = new Map(meters.value.map((m) => [m.address.toLowerCase(),
          newest(this.meters.get(m.address.toLowerCase()), m)]));
        meters.value.forEach(remember);
        $("fleet-error").innerHTML = "";
        this.renderTable();
      } else {
        $("fleet-error").innerHTML = errorBox(meters.reason);
      }
      if (tariffs.status === "fulfilled") this.tariff = inForce(tariffs.value);
      this.gridAlerts = grid.status === "fulfilled" ? grid.value.results : [];
      this.consumptionAlerts = consumption.status === "fulfilled" ? consumption.value.results : [];
      this.renderGridAlerts(grid.status === "rejected" ? grid.reason : null);
      this.renderConsumptionAlerts(consumption.status === "rejected" ? consumption.reason : null);
      this.renderSummary();
    }

    onLive(message) {
      if (!this.alive) return;
      switch (message.type) {
        case "hello":
          this.load();  // what changed before the socket was subscribed (or while it was down)
          break;
        case "bill":
        case "meter":
          this.upsert(message.meter);
          break;
        case "connection": {
          const meter = this.meters.get(message.address.toLowerCase());
          if (meter) this.upsert({ ...meter, connected: message.connected });
          break;
        }
        case "tariff":
          // A new version may be scheduled ahead: it shows once it is in force (the next load).
          if (new Date(message.tariff.effective_from).getTime() <= Date.now()) {
            this.tariff = message.tariff;
            this.renderSummary();
          }
          break;
        case "grid_alert":
          this.gridAlerts = this.gridAlerts.filter((a) => a.id !== message.alert.id);
          if (message.alert.active) this.gridAlerts.unshift(message.alert);
          this.renderGridAlerts(null);
          break;
        case "consumption_alert":
          this.consumptionAlerts = [message.alert, ...this.consumptionAlerts].slice(0, RECENT_ALERTS);
          this.renderConsumptionAlerts(null);
          break;
        default:
          break;
      }
    }

    sorted() {
      return [...this.meters.values()].sort((a, b) =>
        (a.name || "~").localeCompare(b.name || "~") || a.address.localeCompare(b.address));
    }

    cells(m) {
      const last = m.last_reading;
      return {
        meter: m.name
          ? html`<a href="#/meter/${m.address}">${m.name}</a>
              <span class="address" title="${m.address}">${shortAddress(m.address)}</span>`
          : html`<a href="#/meter/${m.address}" title="${m.address}">${shortAddress(m.address)}</a>`,
        region: html`${m.region || "—"}`,
        status: statusBadge(m.status),
        connection: connectedBadge(m.connected),
        last: html`${last ? when(last.read_at) : "no reading yet"}`,
        energy: html`${kwh(m.open_bill.energy_wh)}`,
        amount: html`${pounds(m.open_bill.amount_due_micropence)}${provisionalBadge(m.open_bill)}`,
      };
    }

    newRow(m) {
      const row = document.createElement("tr");
      row.dataset.address = m.address;
      row.innerHTML = html`<td data-field="meter"></td><td data-field="region"></td><td data-field="status"></td>
        <td data-field="connection"></td><td data-field="last"></td><td data-field="energy" class="num"></td>
        <td data-field="amount" class="num amount-due"></td>`;
      return row;
    }

    fillRow(row, m, flash) {
      const cells = this.cells(m);
      for (const cell of row.cells) updateCell(cell, cells[cell.dataset.field], flash);
    }

    renderTable() {
      const body = document.querySelector("#fleet-table tbody");
      const rows = this.sorted().map((m) => {
        const row = this.newRow(m);
        this.fillRow(row, m, false);
        return row;
      });
      body.replaceChildren(...rows);
      if (!rows.length) body.innerHTML = html`<tr><td colspan="7" class="empty muted">No meters are registered yet.</td></tr>`;
    }

    /** Put a meter's new state in its row (adding the row for a meter not seen before). */
    upsert(meter) {
      const known = this.meters.has(meter.address.toLowerCase());
      this.meters.set(meter.address.toLowerCase(), meter);
      remember(meter);
      if (!known) {
        this.renderTable();
      } else {
        const row = [...document.querySelectorAll("#fleet-table tbody tr")]
          .find((r) => sameAddress(r.dataset.address, meter.address));
        if (row) this.fillRow(row, meter, true);
      }
      this.renderSummary();
    }

    renderSummary() {
      const meters = [...this.meters.values()];
      const due = meters.reduce((sum, m) => sum + Number(m.open_bill.amount_due_micropence), 0);
      const tariff = this.tariff
        ? html`${describePricing(this.tariff.import_pricing)},
            ${pencePerUnit(this.tariff.standing_charge_millipence_per_day)} p/day,
            export ${describePricing(this.tariff.export_pricing)}
            <span class="muted">(v${this.tariff.version})</span>`
        : html`<span class="muted">none set</span>`;
      const stat = (label, value) => html`<div class="stat"><span class="stat-label">${label}</span>
        <span class="stat-value">${value}</span></div>`;
      $("fleet-summary").innerHTML = html`
        ${stat("Meters", meters.length)}
        ${stat("Active", meters.filter((m) => m.status === "active").length)}
        ${stat("Connected", meters.filter((m) => m.connected).length)}
        ${stat("Open bills", pounds(due))}
        ${stat("Tariff", tariff)}`;
    }

    renderGridAlerts(error) {
      $("grid-alerts").innerHTML = error ? html`<li>${errorBox(error)}</li>`
        : list(this.gridAlerts.map(alertItem), "No grid alert is in force.");
    }

    renderConsumptionAlerts(error) {
      $("consumption-alerts").innerHTML = error ? html`<li>${errorBox(error)}</li>`
        : list(this.consumptionAlerts.map((a) => consumptionItem(a, true)), "No consumption alert yet.");
    }
  }

  // ---------------------------------------------------------------- meter view

  /** One meter's page: loaded whole (again at each live (re)connection), kept current from live messages. */
  class MeterView {
    constructor(address) {
      this.address = address;
      this.meter = null;
      this.chart = null;
      this.chartType = "bar";
      this.day = isoDate(new Date());
      this.hours = [];
      this.drEvents = [];
      this.drCredit = null;  // { period, micropence }: the open bill's DR credits, kept across live updates
      this.consumptionAlerts = [];
      this.alive = true;
      this.loads = 0;
      this.reloadTimer = null;
    }

    mount(root) {
      const back = session.me.role === "operator" ? html`<a class="back" href="#/">← All meters</a>` : "";
      root.innerHTML = html`
        ${back}
        <div id="meter-head"><h1>Meter ${shortAddress(this.address)}</h1></div>
        <div id="meter-error"></div>
        <div class="columns">
          <section class="panel" id="bill-breakdown"><h2>Current bill</h2><p class="muted">Loading…</p></section>
          <section class="panel" id="meter-state"><h2>Meter</h2><p class="muted">Loading…</p></section>
        </div>
        <section class="panel" id="consumption">
          <div class="panel-head">
            <h2>Consumption</h2>
            <div class="controls">
              <label>Day <input type="date" id="day" value="${this.day}" max="${isoDate(new Date())}"></label>
              <div class="toggle" role="group" aria-label="chart type">
                <button type="button" data-type="bar" aria-pressed="true">Bars</button>
                <button type="button" data-type="line" aria-pressed="false">Line</button>
              </div>
            </div>
          </div>
          <div id="chart-error"></div>
          <div class="chart-layout">
            <div class="chart-main">
              <div class="chart-box"><canvas id="consumption-chart" aria-label="hourly consumption"></canvas></div>
              <div id="dr-error"></div>
              <ul class="dr-events" id="dr-events"></ul>
            </div>
            <div class="table-wrap hours">
              <table class="data" id="hourly-table">
                <thead><tr><th>Hour</th><th class="num">kWh</th></tr></thead>
                <tbody></tbody>
                <tfoot></tfoot>
              </table>
            </div>
          </div>
        </section>
        <section class="panel" id="settlement">
          <div class="panel-head">
            <h2>Half-hourly: energy and price</h2>
            <p class="muted small">The day shown above, in settlement periods: import (up) and export (down)
              in kWh, the import price as a line. Hatched bars are estimated (a gap in the readings spans them).</p>
          </div>
          <div id="settlement-error"></div>
          <div class="chart-box"><canvas id="halfhour-chart" aria-label="half-hourly import, export and price"></canvas></div>
          <h3>What each price cost this day</h3>
          <div class="table-wrap" id="band-costs"><p class="muted">Loading…</p></div>
        </section>
        <section class="panel">
          <h2>Bills</h2>
          <div class="table-wrap" id="bills"><p class="muted">Loading…</p></div>
        </section>
        <div class="columns">
          <section class="panel">
            <h2>Grid alerts</h2>
            <div id="grid-timeline" class="timeline"><p class="muted">Loading…</p></div>
          </section>
          <section class="panel">
            <h2>Consumption alerts</h2>
            <ul class="alerts" id="meter-consumption-alerts"></ul>
          </section>
        </div>
        <section class="panel" id="threshold">
          <h2>Consumption alert threshold</h2>
          <div id="threshold-state"><p class="muted">Loading…</p></div>
          <form id="threshold-form" class="inline-form">
            <label for="hourly-limit">Hourly limit (Wh)</label>
            <input id="hourly-limit" type="number" min="0" max="1000000" step="1" inputmode="numeric"
              placeholder="default">
            <button type="submit">Save</button>
            <button type="button" id="threshold-default" class="secondary">Use the default</button>
          </form>
          <p class="muted small">0 turns hourly alerts off; "Use the default" follows the server's setting.</p>
          <p id="threshold-result" role="status"></p>
        </section>`;
      $("day").addEventListener("change", (event) => {
        if (!event.target.value) return;
        this.day = event.target.value;
        this.loadHours();
        this.loadHalfHours();
        this.loadDemandResponse();
      });
      for (const button of document.querySelectorAll("#consumption .toggle button")) {
        button.addEventListener("click", () => this.setChartType(button.dataset.type));
      }
      $("threshold-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const raw = $("hourly-limit").value.trim();
        if (raw === "") {
          $("threshold-result").innerHTML = html`<span class="form-error">Enter a number of Wh (0 for no alerts),
            or choose "Use the default".</span>`;
          return;
        }
        this.saveThreshold(Number.parseInt(raw, 10));
      });
      $("threshold-default").addEventListener("click", () => this.saveThreshold(null));
      this.load();
    }

    destroy() {
      this.alive = false;
      clearTimeout(this.reloadTimer);
      if (this.chart) this.chart.destroy();
      this.chart = null;
      if (this.halfHourChart) this.halfHourChart.destroy();
      this.halfHourChart = null;
    }

    path(suffix = "") { return `/meters/${this.address}${suffix}`; }

    async load() {
      const load = ++this.loads;
      let meter;
      try {
        meter = await api(this.path());
      } catch (err) {
        if (!this.alive || load !== this.loads) return;
        $("meter-error").innerHTML = errorBox(err);
        if (!this.meter) {  // nothing shown yet (else what is shown stays, under the error)
          for (const id of ["bill-breakdown", "meter-state"]) $(id).querySelector("p").textContent = "Not available.";
        }
        return;
      }
      if (!this.alive || load !== this.loads) return;  // gone, or a newer load is under way
      this.meter = newest(this.meter, meter);
      remember(meter);
      $("meter-error").innerHTML = "";
      this.renderMeter(false);
      await Promise.all([this.loadHours(), this.loadHalfHours(), this.loadDemandResponse(), this.loadBills(),
        this.loadGridAlerts(), this.loadConsumptionAlerts(), this.loadThreshold()]);
    }

    onLive(message) {
      if (!this.alive) return;
      const mine = (address) => sameAddress(address, this.address);
      switch (message.type) {
        case "hello":
          this.load();  // what changed before the socket was subscribed (or while it was down)
          break;
        case "bill":
        case "meter":
          if (!mine(message.meter.address)) break;
          this.meter = message.meter;
          this.renderMeter(true);
          if (message.type === "bill") this.scheduleReload();
          break;
        case "connection":
          if (this.meter && mine(message.address)) {
            this.meter = { ...this.meter, connected: message.connected };
            this.renderMeter(true);
          }
          break;
        case "grid_alert":
          this.loadGridAlerts();
          break;
        case "consumption_alert":
          if (mine(message.alert.meter)) {
            this.consumptionAlerts = [message.alert, ...this.consumptionAlerts];
            this.renderConsumptionAlerts(null);
          }
          break;
        default:
          break;
      }
    }

    /** A new bill: reload the bills, and the chart when the day shown is today (its data changed). */
    scheduleReload() {
      clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => {
        if (!this.alive) return;
        this.loadBills();
        const read = this.meter.last_reading ? isoDate(new Date(this.meter.last_reading.read_at)) : null;
        if (this.day === isoDate(new Date()) || this.day === read) {
          this.loadHours();
          this.loadHalfHours();
          if (this.drEvents.some((e) => !e.opted_out && e.baseline_kind !== "credited")) this.loadDemandResponse();
        }
      }, RELOAD_DELAY_MS);
    }

    renderMeter(flash) {
      const m = this.meter;
      const bill = m.open_bill;
      const customer = m.customer ? html`<p class="muted">${m.customer.name} · ${m.customer.postal_address}</p>` : "";
      $("meter-head").innerHTML = html`
        <h1>${m.name || shortAddress(m.address)}</h1>
        <p class="meter-meta"><span class="address">${m.address}</span> · ${m.region || "no region"}
          · ${statusBadge(m.status)} ${connectedBadge(m.connected)}</p>
        ${customer}`;
      const breakdown = $("bill-breakdown");
      if (!breakdown.querySelector("dl")) {
        breakdown.innerHTML = html`<h2>Current bill</h2><p class="muted" data-field="period"></p>
          <dl class="breakdown">
            <dt>Energy used</dt><dd data-field="energy"></dd>
            <dt>Energy charge</dt><dd data-field="energy-charge"></dd>
            <dt>Energy exported</dt><dd data-field="export"></dd>
            <dt>Export credit</dt><dd data-field="export-credit"></dd>
            <dt>Standing charge</dt><dd data-field="standing-charge"></dd>
            <dt class="total">Amount due</dt><dd class="total amount-due" data-field="amount"></dd>
            <dt class="dr-row" hidden>Demand-response credit</dt><dd class="dr-row" data-field="dr-credit" hidden></dd>
            <dt class="total dr-row" hidden>Amount payable</dt>
            <dd class="total amount-payable dr-row" data-field="payable" hidden></dd>
          </dl>`;
      }
      const credit = this.openBillCredit(bill);
      const values = {
        period: html`Period ${bill.period_id}: ${when(bill.period_start)} to ${when(bill.period_end)}`,
        energy: html`${kwh(bill.energy_wh, 3)} kWh`,
        "energy-charge": html`${pounds(bill.energy_charge_micropence)}`,
        export: html`${kwh(bill.export_wh, 3)} kWh`,
        "export-credit": html`−${pounds(bill.export_credit_micropence)}`,
        "standing-charge": html`${pounds(bill.standing_charge_micropence)}`,
        amount: html`${pounds(bill.amount_due_micropence)}${bill.in_credit ? " (in credit)" : ""}${provisionalBadge(bill)}`,
        "dr-credit": html`−${pounds(credit || 0)}`,
        payable: html`${pounds(bill.amount_due_micropence - (credit || 0))}`,
      };
      for (const element of breakdown.querySelectorAll("[data-field]")) {
        updateCell(element, values[element.dataset.field], flash);
      }
      for (const element of breakdown.querySelectorAll(".dr-row")) element.hidden = !(credit > 0);
      const last = m.last_reading;
      $("meter-state").innerHTML = html`<h2>Meter</h2>
        <dl class="breakdown">
          <dt>Status</dt><dd>${statusBadge(m.status)} <span class="muted">since ${when(m.status_changed_at)}</span></dd>
          <dt>Connection</dt><dd>${connectedBadge(m.connected)}</dd>
          <dt>Last reading</dt><dd>${last ? when(last.read_at) : "no reading yet"}</dd>
          <dt>Register</dt><dd>${last ? `${kwh(last.register_wh, 3)} kWh (reading ${last.seq})` : "—"}</dd>
          <dt>Account</dt><dd><span class="address" title="${m.account_ref}">${shortAddress(m.account_ref)}</span></dd>
          <dt>Rejected readings</dt><dd>${m.rejected_readings}</dd>
        </dl>`;
    }

    /** The open bill's demand-response credits (micropence): live updates carry none (null), so the last
     *  figure the API gave for the same period stands; null when not known. */
    openBillCredit(bill) {
      const given = bill.demand_response_credit_micropence;
      if (given !== null && given !== undefined) this.drCredit = { period: bill.period_id, micropence: given };
      return this.drCredit && this.drCredit.period === bill.period_id ? this.drCredit.micropence : null;
    }

    // ---- consumption chart and hourly table

    async loadHours() {
      const [start, end] = dayBounds(this.day);
      const params = query({ group_by: "hour", period_from: this.day, period_to: isoDate(end), order_by: "period",
        page_size: 100 });
      let page;
      try {
        page = await api(`${this.path("/readings")}?${params}`);
      } catch (err) {
        if (this.alive) $("chart-error").innerHTML = errorBox(err);
        return;
      }
      if (!this.alive) return;
      $("chart-error").innerHTML = "";
      // Every hour of the local day gets a slot (zero when nothing was used), so the chart's axis is the day.
      const byHour = new Map(page.results.map((r) => [new Date(r.interval_start).getTime(), r]));
      const slots = new Set();
      for (let t = start.getTime(); t < end.getTime(); t += HOUR_MS) slots.add(t);
      for (const t of byHour.keys()) slots.add(t);
      this.hours = [...slots].sort((a, b) => a - b).map((t) => ({
        start: new Date(t),
        wh: byHour.has(t) ? byHour.get(t).energy_wh : 0,
      }));
      this.renderHours();
    }

    renderHours() {
      const total = this.hours.reduce((sum, h) => sum + h.wh, 0);
      document.querySelector("#hourly-table tbody").innerHTML = html`${this.hours.map((h) =>
        html`<tr><td>${hourFormat.format(h.start)}</td><td class="num">${kwh(h.wh, 3)}</td></tr>`)}`;
      document.querySelector("#hourly-table tfoot").innerHTML =
        html`<tr><th>Total</th><th class="num">${kwh(total, 3)}</th></tr>`;
      this.drawChart();
    }

    setChartType(type) {
      this.chartType = type;
      for (const button of document.querySelectorAll("#consumption .toggle button")) {
        button.setAttribute("aria-pressed", String(button.dataset.type === type));
      }
      if (this.chart) {
        this.chart.destroy();
        this.chart = null;
      }
      this.drawChart();
    }

    drawChart() {
      if (typeof window.Chart !== "function") {
        $("chart-error").innerHTML = html`<p class="form-error">The chart library did not load
          (/vendor/chart.umd.js); run scripts/bootstrap.sh on the server.</p>`;
        return;
      }
      const labels = this.hours.map((h) => hourFormat.format(h.start));
      const data = this.hours.map((h) => h.wh / 1000);
      const baselines = this.baselineDatasets();
      if (this.chart) {
        this.chart.data.labels = labels;
        this.chart.data.datasets[0].data = data;
        this.chart.data.datasets.splice(1, Infinity, ...baselines);
        this.chart.options.plugins.legend.display = baselines.length > 0;
        this.chart.update();
        return;
      }
      const accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#2563eb";
      this.chart = new window.Chart($("consumption-chart"), {
        type: this.chartType,
        plugins: [this.eventWindowsPlugin()],
        data: {
          labels,
          datasets: [{
            label: "Actual kWh",
            data,
            backgroundColor: this.chartType === "bar" ? accent : `${accent}33`,
            borderColor: accent,
            borderWidth: this.chartType === "bar" ? 0 : 2,
            fill: this.chartType === "line",
            tension: 0.25,
            pointRadius: 2,
          }, ...baselines],
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: { duration: 300 },
          plugins: {
            legend: { display: baselines.length > 0, position: "bottom" },
            tooltip: { callbacks: { label: (item) => (item.dataset.drEvent
              ? `${item.dataset.label}: ${item.parsed.y.toFixed(3)} kWh this hour had there been no event`
              : `${item.parsed.y.toFixed(3)} kWh`) } },
          },
          scales: {
            x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 8 } },
            y: { beginAtZero: true, grace: "10%", title: { display: true, text: "kWh" } },
          },
          layout: { padding: { top: 16 } },
        },
      });
    }

    // ---- demand-response events on the day chart: each window shaded, the baseline against the actual

    async loadDemandResponse() {
      const day = this.day;
      const [, end] = dayBounds(day);
      let events;
      try {
        events = await api(`${this.path("/demand-response")}?${query({ period_from: day, period_to: isoDate(end) })}`);
      } catch (err) {
        if (this.alive && day === this.day) $("dr-error").innerHTML = errorBox(err);
        return;
      }
      if (!this.alive || day !== this.day) return;
      $("dr-error").innerHTML = "";
      this.drEvents = events;
      this.renderDemandResponse();
      this.drawChart();
    }

    /** One line per event under the chart: its window, status and the meter's figures, in plain words. */
    renderDemandResponse() {
      const span = (e) => `${hourFormat.format(new Date(e.start))}–${hourFormat.format(new Date(e.end))}`;
      const figures = (e) => {
        if (e.opted_out) return "you opted out: no baseline, no credit";
        if (e.status === "far" || e.status === "near") return "to come";
        if (e.baseline_wh === null) return "too few days of readings for a baseline: no credit";
        const actual = e.actual_wh === null ? "not all read yet" : `${kwh(e.actual_wh, 3)} kWh`;
        const base = `${e.baseline_kind === "provisional" ? "provisional baseline" : "baseline"} ${kwh(e.baseline_wh, 3)} kWh, actual ${actual}`;
        return e.credit_micropence === null ? `${base}; not credited yet` : `${base}; credit ${pounds(e.credit_micropence)}`;
      };
      $("dr-events").innerHTML = html`${this.drEvents.map((e) => html`<li data-event="${e.event_id}"
        data-baseline-kind="${e.baseline_kind || ""}"><span class="dr-swatch"></span>Demand-response event
        ${e.event_id} (${e.programme}), ${span(e)}, ${e.status}: ${figures(e)}</li>`)}`;
    }

    /** A dashed line per event with a baseline: in the hours its window covers, the hour as it would have
     *  been without the event (the actual outside the window plus the baseline inside it). */
    baselineDatasets() {
      const bounds = this.hours.map((h, i) => [h.start.getTime(),
        i + 1 < this.hours.length ? this.hours[i + 1].start.getTime() : h.start.getTime() + HOUR_MS]);
      return this.drEvents.filter((e) => e.baseline_wh !== null && !e.opted_out).map((e) => {
        const data = this.hours.map((h, i) => {
          const inHour = e.half_hours.filter((p) => {
            const t = new Date(p.start).getTime();
            return t >= bounds[i][0] && t < bounds[i][1];
          });
          if (!inHour.length) return null;
          const wh = inHour.reduce((sum, p) => sum + p.baseline_wh - (p.actual_wh || 0), h.wh);
          return Math.max(0, wh) / 1000;
        });
        const label = `Baseline, event ${e.event_id}${e.baseline_kind === "provisional" ? " (provisional)" : ""}`;
        return { type: "line", label, data, drEvent: e.event_id, baselineKind: e.baseline_kind,
          borderColor: "#c2410c", backgroundColor: "rgba(194, 65, 12, 0.12)", borderDash: [6, 4], borderWidth: 2, fill: false,
          pointStyle: "line", pointRadius: 12, pointBorderWidth: 3, spanGaps: false, order: -1 };
      });
    }

    /** A Chart.js plugin shading each event's window behind the bars (future events included). */
    eventWindowsPlugin() {
      const view = this;
      const spans = (chart) => {
        const x = chart.scales.x;
        const area = chart.chartArea;
        return view.drEvents.map((e) => ({ e,
          left: Math.max(area.left, x.getPixelForValue(view.hourPosition(e.start, x.options.offset))),
          right: Math.min(area.right, x.getPixelForValue(view.hourPosition(e.end, x.options.offset))) }))
          .filter((s) => s.right > s.left);
      };
      return {
        id: "drWindows",
        beforeDatasetsDraw(chart) {
          const { ctx, chartArea: area } = chart;
          ctx.save();
          for (const { e, left, right } of spans(chart)) {
            ctx.fillStyle = e.opted_out ? "rgba(95, 107, 122, 0.12)" : "rgba(194, 65, 12, 0.12)";
            ctx.fillRect(left, area.top, right - left, area.bottom - area.top);
          }
          ctx.restore();
        },
        afterDatasetsDraw(chart) {
          const { ctx, chartArea: area } = chart;
          ctx.save();
          ctx.fillStyle = "#9a3412";
          ctx.font = "12px system-ui, sans-serif";
          ctx.textAlign = "center";
          for (const { e, left, right } of spans(chart)) ctx.fillText(`event ${e.event_id}`, (left + right) / 2, area.top - 4);
          ctx.restore();
        },
      };
    }

    /** Where an ISO time falls on the hourly axis, as a fractional category index. */
    hourPosition(isoTime, offset) {
      const t = new Date(isoTime).getTime();
      const shift = offset ? -0.5 : 0;
      const hours = this.hours;
      if (!hours.length) return shift;
      for (let i = 0; i < hours.length; i += 1) {
        const from = hours[i].start.getTime();
        const to = i + 1 < hours.length ? hours[i + 1].start.getTime() : from + HOUR_MS;
        if (t < to) return i + shift + Math.max(0, (t - from) / (to - from));
      }
      return hours.length + shift;
    }

    // ---- half-hourly settlement periods: 48 bars (46 or 50 on clock-change days) and the price

    async loadHalfHours() {
      const [, end] = dayBounds(this.day);
      const range = { period_from: this.day, period_to: isoDate(end) };
      let page;
      let bands;
      try {
        [page, bands] = await Promise.all([
          api(`${this.path("/readings")}?${query({ ...range, group_by: "halfhour", order_by: "period", page_size: 100 })}`),
          api(`${this.path("/band-costs")}?${query(range)}`),
        ]);
      } catch (err) {
        if (this.alive) $("settlement-error").innerHTML = errorBox(err);
        return;
      }
      if (!this.alive) return;
      $("settlement-error").innerHTML = "";
      this.halfHours = page.results;
      this.renderBandCosts(bands);
      this.drawHalfHours();
    }

    renderBandCosts(bands) {
      const names = ["off-peak", "day", "peak"];
      const label = (b, i) => (b.band === null ? `${pencePerUnit(b.import_price_millipence_per_kwh)} p/kWh`
        : `${bands.length === 3 ? names[i] : `band ${b.band}`} (${pencePerUnit(b.import_price_millipence_per_kwh)} p/kWh)`);
      const rows = bands.map((b, i) => html`<tr><td>${label(b, i)}</td><td class="num">${b.periods}</td>
        <td class="num">${kwh(b.import_wh, 3)}</td><td class="num">${pounds(b.import_cost_micropence)}</td>
        <td class="num">${kwh(b.export_wh, 3)}</td><td class="num">${pounds(b.export_credit_micropence)}</td></tr>`);
      $("band-costs").innerHTML = html`<table class="data" id="band-costs-table">
        <thead><tr><th>Price</th><th class="num">Half hours</th><th class="num">Import kWh</th>
          <th class="num">Cost</th><th class="num">Export kWh</th><th class="num">Credit</th></tr></thead>
        <tbody>${rows.length ? rows : html`<tr><td colspan="6" class="empty muted">No readings this day.</td></tr>`}
        </tbody></table>`;
    }

    drawHalfHours() {
      if (typeof window.Chart !== "function") return;
      const periods = this.halfHours || [];
      const labels = periods.map((p) => hourFormat.format(new Date(p.interval_start)));
      const imports = periods.map((p) => p.import_wh / 1000);
      const exports = periods.map((p) => -p.export_wh / 1000);
      const prices = periods.map((p) => p.import_price_millipence_per_kwh / 1000);
      const accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#2563eb";
      const estimated = (colour) => periods.map((p) => (p.estimated ? `${colour}66` : colour));
      if (this.halfHourChart) this.halfHourChart.destroy();
      this.halfHourChart = new window.Chart($("halfhour-chart"), {
        data: {
          labels,
          datasets: [
            { type: "bar", label: "Import kWh", data: imports, backgroundColor: estimated(accent), yAxisID: "y",
              stack: "energy" },
            { type: "bar", label: "Export kWh", data: exports, backgroundColor: estimated("#16a34a"), yAxisID: "y",
              stack: "energy" },
            { type: "line", label: "Import price p/kWh", data: prices, borderColor: "#dc2626", borderWidth: 2,
              pointRadius: 0, stepped: true, yAxisID: "price" },
          ],
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: { duration: 300 },
          plugins: { legend: { display: true, position: "bottom" } },
          scales: {
            x: { stacked: true, grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 8 } },
            y: { stacked: true, title: { display: true, text: "kWh" } },
            price: { position: "right", beginAtZero: true, grid: { display: false },
              title: { display: true, text: "p/kWh" } },
          },
        },
      });
    }

    // ---- bills

    async loadBills() {
      let page;
      try {
        page = await api(`${this.path("/bills")}?${query({ page_size: 50 })}`);
      } catch (err) {
        if (this.alive) $("bills").innerHTML = errorBox(err);
        return;
      }
      if (!this.alive) return;
      // Demand-response credits are not part of the amount due: two more columns when a bill has some.
      const credited = page.results.some((b) => b.demand_response_credit_micropence > 0);
      const creditCells = (b) => (credited ? html`<td class="num dr-credit">${b.demand_response_credit_micropence
        ? `−${pounds(b.demand_response_credit_micropence)}` : "—"}</td>
        <td class="num amount-payable"><strong>${b.amount_payable_micropence === null ? "—"
          : pounds(b.amount_payable_micropence)}</strong></td>` : "");
      const rows = page.results.map((b) => html`<tr data-period="${b.period_id}">
        <td>${b.period_id}</td>
        <td class="nowrap">${day(b.period_start)} – ${day(b.period_end)}</td>
        <td>${b.status === "open" ? badge("open", "info") : badge("issued", "ok")}</td>
        <td class="num">${kwh(b.energy_wh, 3)}</td>
        <td class="num">${pounds(b.energy_charge_micropence)}</td>
        <td class="num">${pounds(b.export_credit_micropence)}</td>
        <td class="num">${pounds(b.standing_charge_micropence)}</td>
        <td class="num"><strong>${pounds(b.amount_due_micropence)}</strong></td>
        ${creditCells(b)}
        <td class="nowrap">${b.issued_at ? when(b.issued_at) : "—"}</td>
        <td class="nowrap statement" title="${b.status === "open" ? "Provisional statement: the period is still open"
          : "Statement of the issued bill"}">
          <a href="#" class="statement-link" data-period="${b.period_id}" data-format="pdf">PDF</a> ·
          <a href="#" class="statement-link" data-period="${b.period_id}" data-format="csv">CSV</a></td>
      </tr>`);
      $("bills").innerHTML = html`<table class="data" id="bills-table">
        <thead><tr><th>#</th><th>Period</th><th>Status</th><th class="num">kWh</th><th class="num">Energy</th>
          <th class="num">Export credit</th><th class="num">Standing</th><th class="num">Amount due</th>
          ${credited ? html`<th class="num">Demand-response credit</th><th class="num">Amount payable</th>` : ""}
          <th>Issued</th><th>Statement</th></tr></thead>
        <tbody>${rows.length ? rows : html`<tr><td colspan="10" class="empty muted">No bills yet.</td></tr>`}</tbody>
      </table>
      ${page.count > page.results.length ? html`<p class="muted small">The newest ${page.results.length} of
        ${page.count} bills.</p>` : ""}
      <p class="muted small" id="statement-status" role="status"></p>`;
      for (const link of $("bills").querySelectorAll(".statement-link")) {
        link.addEventListener("click", (event) => {
          event.preventDefault();
          this.downloadStatement(link.dataset.period, link.dataset.format);
        });
      }
    }

    /** Download a period's statement (PDF or CSV), saying what happened under the bills. */
    async downloadStatement(period, format) {
      const status = $("statement-status");
      status.textContent = `Drawing up the statement of period ${period}…`;
      try {
        const name = await download(this.path(`/bills/${period}/statement.${format}`));
        if (this.alive) status.textContent = `Downloaded ${name}.`;
      } catch (err) {
        if (this.alive) status.innerHTML = errorBox(err);
      }
    }

    // ---- grid alerts on a timeline

    async loadGridAlerts() {
      const region = session.me.role === "operator" && this.meter ? this.meter.region : undefined;
      let page;
      try {
        page = await api(`/grid-alerts?${query({ region, page_size: 20 })}`);
      } catch (err) {
        if (this.alive) $("grid-timeline").innerHTML = errorBox(err);
        return;
      }
      if (this.alive) this.renderTimeline(page.results);
    }

    /** Each alert as a bar from raised to cleared (or expiry), on one time axis ending after now. */
    renderTimeline(alerts) {
      const box = $("grid-timeline");
      if (!alerts.length) {
        box.innerHTML = html`<p class="muted">No grid alert for this meter's region.</p>`;
        return;
      }
      const now = Date.now();
      const spans = alerts.map((a) => ({
        alert: a,
        from: new Date(a.raised_at).getTime(),
        to: new Date(a.cleared_at || a.expires_at).getTime(),
      }));
      const first = Math.min(...spans.map((s) => s.from));
      const last = Math.max(now, ...spans.map((s) => s.to));
      const width = Math.max(last - first, 1);
      const pct = (t) => `${((t - first) / width * 100).toFixed(2)}%`;
      const rows = spans.map(({ alert, from, to }) => {
        const state = alert.active ? "in force" : alert.cleared_at ? "cleared" : "expired";
        return html`<li class="timeline-row">
          <div class="timeline-label">${badge(alert.severity, alert.severity)} ${alert.message}
            <span class="muted small">${alert.region || "all regions"} · ${state} ·
              ${when(alert.raised_at)} → ${when(alert.cleared_at || alert.expires_at)}</span></div>
          <div class="timeline-track">
            <span class="timeline-bar sev-${alert.severity}${alert.active ? " active" : ""}"
              style="left:${pct(from)};width:max(3px, calc(${pct(to)} - ${pct(from)}))"></span>
            <span class="timeline-now" style="left:${pct(now)}" title="now"></span>
          </div>
        </li>`;
      });
      box.innerHTML = html`<ul class="timeline-rows">${rows}</ul>
        <div class="timeline-axis muted small"><span>${when(new Date(first).toISOString())}</span>
          <span>${when(new Date(last).toISOString())}</span></div>`;
    }

    // ---- consumption alerts

    async loadConsumptionAlerts() {
      let page;
      try {
        page = await api(`${this.path("/consumption-alerts")}?${query({ page_size: 20 })}`);
      } catch (err) {
        if (this.alive) this.renderConsumptionAlerts(err);
        return;
      }
      if (!this.alive) return;
      this.consumptionAlerts = page.results;
      this.renderConsumptionAlerts(null);
    }

    renderConsumptionAlerts(error) {
      $("meter-consumption-alerts").innerHTML = error ? html`<li>${errorBox(error)}</li>`
        : list(this.consumptionAlerts.map((a) => consumptionItem(a, false)), "No consumption alert for this meter.");
    }

    // ---- threshold

    async loadThreshold() {
      try {
        this.renderThreshold(await api(this.path("/threshold")));
      } catch (err) {
        if (this.alive) $("threshold-state").innerHTML = errorBox(err);
      }
    }

    renderThreshold(t) {
      if (!this.alive) return;
      const limit = t.hourly_limit_wh === 0
        ? html`<strong>off</strong> (no hourly alerts)`
        : html`<strong>${Number(t.hourly_limit_wh).toLocaleString("en-GB")} Wh</strong> an hour`;
      $("threshold-state").innerHTML = html`<p>Hourly limit: ${limit}
        <span class="muted">(${t.source === "default" ? "the server's default" : "set for this meter"})</span>.
        A jump alert fires when power exceeds ${t.jump_factor}× the recent median and at least
        ${Number(t.jump_min_w).toLocaleString("en-GB")} W.</p>`;
      $("hourly-limit").value = t.source === "default" ? "" : String(t.hourly_limit_wh);
    }

    async saveThreshold(limit) {
      const result = $("threshold-result");
      result.textContent = "Saving…";
      try {
        const t = await api(this.path("/threshold"), { method: "PUT", body: { hourly_limit_wh: limit } });
        this.renderThreshold(t);
        if (this.alive) result.innerHTML = html`<span class="ok">Saved.</span>`;
      } catch (err) {
        if (this.alive) result.innerHTML = errorBox(err);
      }
    }
  }

  // ---------------------------------------------------------------- messages

  /** How many conversations the operator's list shows a page at a time, and messages a conversation loads at once. */
  const CONVERSATIONS_PAGE = 100;
  const MESSAGES_PAGE = 50;

  /** The top bar's unread count: asked of the server again whenever a message or read mark goes live. */
  const inbox = {
    loads: 0,
    timer: null,

    async refresh() {
      const load = ++this.loads;
      let page;
      try {
        page = await api(`/conversations?${query({ with_messages: true, page_size: 1 })}`);
      } catch (err) {
        return;  // the badge keeps its last count; the page shows the error where it matters
      }
      if (load === this.loads && session.me) this.show(page.unread);
    },

    soon() {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.refresh(), RELOAD_DELAY_MS);
    },

    clear() {
      clearTimeout(this.timer);
      this.loads += 1;
      this.show(0);
    },

    show(count) {
      const badge = $("unread-badge");
      badge.textContent = String(count);
      badge.hidden = !count;
      $("messages-link").title = count ? `${count} unread` : "no unread messages";
    },

    onLive(message) {
      if (["hello", "message", "messages_read"].includes(message.type)) this.soon();
    },
  };

  /** Who wrote a message, as the reader sees it. */
  function authorLabel(message, conversation) {
    const side = session.me.role === "operator" ? "operator" : "customer";
    if (message.author === side) return "You";
    if (message.author === "operator") return "Operator";
    return (conversation && conversation.customer_name) || "Customer";
  }

  function conversationTitle(c) {
    const meter = c.meters.length ? c.meters[0] : null;
    return c.customer_name || (meter && meter.name) || shortAddress(c.account_ref);
  }

  /**
   * Messages between an account's customer and the operator. The operator without an account
   * gets the list of every account's conversation (those with messages first, unread counts
   * beside them); with one, that conversation. A customer always gets their own. Opening a
   * conversation, and a message of the other side arriving while it is open, marks the other
   * side's messages read.
   */
  class MessagesView {
    constructor(ref) {
      this.ref = ref ? ref.toLowerCase() : null;
      this.side = session.me.role === "operator" ? "operator" : "customer";
      this.conversation = null;
      this.messages = new Map();
      this.loadedPages = 0;
      this.more = false;
      this.alive = true;
      this.loads = 0;
      this.timer = null;
      this.reading = 0;
    }

    mount(root) {
      this.root = root;
      if (this.side === "operator" && !this.ref) this.mountList();
      else this.mountConversation();
    }

    destroy() {
      this.alive = false;
      clearTimeout(this.timer);
    }

    onLive(message) {
      if (!this.alive) return;
      if (this.side === "operator" && !this.ref) {
        if (["hello", "message", "messages_read"].includes(message.type)) this.soon(() => this.loadList());
        return;
      }
      if (message.type === "hello") {
        this.soon(() => this.loadNewest());  // what was said while the socket was down
      } else if (message.type === "message" && message.message.account_ref === this.ref) {
        this.add([message.message]);
        this.render(true);
        if (message.message.author !== this.side) this.markRead();
      } else if (message.type === "messages_read" && message.account_ref === this.ref) {
        const now = message.read_at;
        for (const m of this.messages.values()) {
          if (m.author !== message.reader && m.id <= message.up_to_id && !m.read_at) m.read_at = now;
        }
        this.render(false);
      }
    }

    soon(action) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => { if (this.alive) action(); }, RELOAD_DELAY_MS);
    }

    // ---- the operator's list of conversations

    mountList() {
      this.root.innerHTML = html`
        <h1>Messages</h1>
        <section class="panel">
          <h2>Conversations</h2>
          <div id="conversations-error"></div>
          <div class="table-wrap">
            <table class="data" id="conversations-table">
              <thead><tr><th>Account holder</th><th>Meter</th><th>Last message</th><th>When</th>
                <th class="num">Unread</th></tr></thead>
              <tbody><tr><td colspan="5" class="empty muted">Loading…</td></tr></tbody>
            </table>
          </div>
          <p class="muted small" id="conversations-count"></p>
        </section>`;
      this.loadList();
    }

    async loadList() {
      const load = ++this.loads;
      let page;
      try {
        page = await api(`/conversations?${query({ page_size: CONVERSATIONS_PAGE })}`);
      } catch (err) {
        if (this.alive) $("conversations-error").innerHTML = errorBox(err);
        return;
      }
      if (!this.alive || load !== this.loads) return;
      $("conversations-error").innerHTML = "";
      const rows = page.results.map((c) => {
        const meter = c.meters.length ? c.meters[0] : null;
        const last = c.last_message;
        const excerpt = last ? html`<span class="muted">${authorLabel(last, c)}:</span> ${last.body}` : "";
        return html`<tr data-account="${c.account_ref}" class="${c.unread ? "unread" : ""}">
          <td data-field="holder"><a href="#/messages/${c.account_ref}">${conversationTitle(c)}</a></td>
          <td data-field="meter">${meter ? html`${meter.name || shortAddress(meter.address)}` : html`<span
            class="muted">none</span>`}</td>
          <td data-field="last" class="excerpt">${last ? excerpt : html`<span class="muted">no messages yet</span>`}</td>
          <td data-field="when" class="nowrap">${last ? when(last.sent_at) : "—"}</td>
          <td data-field="unread" class="num">${c.unread ? badge(c.unread, "info") : ""}</td>
        </tr>`;
      });
      document.querySelector("#conversations-table tbody").innerHTML = rows.length ? html`${rows}`
        : html`<tr><td colspan="5" class="empty muted">No account is registered yet.</td></tr>`;
      $("conversations-count").textContent = page.count > page.results.length
        ? `The ${page.results.length} most recently active of ${page.count} accounts.` : "";
    }

    // ---- one conversation

    mountConversation() {
      const back = this.side === "operator" ? html`<a class="back" href="#/messages">← All conversations</a>`
        : html`<a class="back" href="#/meter/${session.me.meter}">← Your meter</a>`;
      this.root.innerHTML = html`
        ${back}
        <div id="conversation-head"><h1>Messages</h1></div>
        <section class="panel conversation">
          <div id="conversation-error"></div>
          <button type="button" id="older-messages" class="secondary" hidden>Older messages</button>
          <ol class="messages" id="message-list"><li class="empty muted">Loading…</li></ol>
          <form id="message-form" class="message-form">
            <label for="message-body">${this.side === "operator" ? "Reply" : "Write to the operator"}</label>
            <textarea id="message-body" rows="3" required></textarea>
            <div class="message-actions">
              <span class="muted small">Ctrl+Enter sends</span>
              <button type="submit" id="message-send">Send</button>
            </div>
          </form>
          <div id="message-result" role="status"></div>
        </section>`;
      $("message-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.send();
      });
      $("message-body").addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          this.send();
        }
      });
      $("older-messages").addEventListener("click", () => this.loadOlder());
      this.open();
    }

    /** Find the conversation (a customer's own account, or the one named), then its newest messages. */
    async open() {
      let page;
      try {
        page = await api(`/conversations?${query({ account_ref: this.side === "operator" ? this.ref : undefined })}`);
      } catch (err) {
        if (this.alive) $("conversation-error").innerHTML = errorBox(err);
        return;
      }
      if (!this.alive) return;
      if (this.side === "customer") {
        this.conversation = page.results[0] || null;
        if (!this.conversation) {
          $("conversation-error").innerHTML = html`<p class="form-error">Your account is not known to the server yet;
            try again once your meter is registered.</p>`;
          return;
        }
        this.ref = this.conversation.account_ref;
      } else {
        this.conversation = page.results[0] || null;
      }
      this.renderHead();
      await this.loadNewest();
    }

    renderHead() {
      const c = this.conversation;
      if (this.side === "customer") {
        $("conversation-head").innerHTML = html`<h1>Messages</h1>
          <p class="muted">Your conversation with the operator about account
            <span class="address" title="${this.ref}">${shortAddress(this.ref)}</span>.</p>`;
        return;
      }
      const meters = c ? c.meters.map((m) => html`<a href="#/meter/${m.address}">${m.name || shortAddress(m.address)}</a>`)
        : [];
      $("conversation-head").innerHTML = html`<h1>${c ? conversationTitle(c) : shortAddress(this.ref)}</h1>
        <p class="meter-meta">Account <span class="address" title="${this.ref}">${shortAddress(this.ref)}</span>
          ${meters.length ? html` · meter ${meters.map((m, i) => html`${i ? ", " : ""}${m}`)}` : ""}</p>`;
    }

    path(tail = "") { return `/accounts/${this.ref}/messages${tail}`; }

    async loadNewest() {
      if (!this.ref) return;
      const load = ++this.loads;
      let page;
      try {
        page = await api(`${this.path()}?${query({ page_size: MESSAGES_PAGE })}`);
      } catch (err) {
        if (this.alive) $("conversation-error").innerHTML = errorBox(err);
        return;
      }
      if (!this.alive || load !== this.loads) return;
      $("conversation-error").innerHTML = "";
      this.add(page.results);
      if (!this.loadedPages) {
        this.loadedPages = 1;
        this.more = Boolean(page.next);
      }
      this.render(true);
      this.markRead();
    }

    async loadOlder() {
      let page;
      try {
        page = await api(`${this.path()}?${query({ page_size: MESSAGES_PAGE, page: this.loadedPages + 1 })}`);
      } catch (err) {
        if (this.alive) $("conversation-error").innerHTML = errorBox(err);
        return;
      }
      if (!this.alive) return;
      this.loadedPages += 1;
      this.more = Boolean(page.next);
      this.add(page.results);  // messages sent since push older ones down a page: the overlap is known already
      this.render(false);
    }

    /** Keep messages by id; a copy without a read mark (the answer to our own send, arriving after the
     *  live `messages_read`) never takes back a read mark already known. */
    add(messages) {
      for (const m of messages) {
        const known = this.messages.get(m.id);
        this.messages.set(m.id, known && known.read_at && !m.read_at ? { ...m, read_at: known.read_at } : m);
      }
    }

    render(toEnd) {
      const list = $("message-list");
      const ordered = [...this.messages.values()].sort((a, b) => a.id - b.id);
      $("older-messages").hidden = !this.more;
      if (!ordered.length) {
        list.innerHTML = html`<li class="empty muted">${this.side === "operator"
          ? "No messages yet. Write the first one below." : "No messages yet. Ask the operator anything below."}</li>`;
        return;
      }
      list.innerHTML = html`${ordered.map((m) => {
        const mine = m.author === this.side;
        const state = mine ? html` · <span data-field="state">${m.read_at ? "read" : "sent"}</span>` : "";
        return html`<li class="message ${mine ? "mine" : "theirs"}" data-id="${m.id}" data-author="${m.author}">
          <div class="message-meta muted small"><strong>${authorLabel(m, this.conversation)}</strong>
            · ${when(m.sent_at)}${state}</div>
          <div class="message-body">${m.body}</div>
        </li>`;
      })}`;
      if (toEnd) list.scrollTop = list.scrollHeight;
    }

    /** Mark the other side's messages shown read, up to the newest of them (once per newer message). */
    async markRead() {
      const theirs = [...this.messages.values()].filter((m) => m.author !== this.side && !m.read_at);
      if (!theirs.length) return;
      const upTo = Math.max(...theirs.map((m) => m.id));
      if (upTo <= this.reading) return;
      this.reading = upTo;
      try {
        await api(this.path("/read"), { method: "POST", body: { up_to_id: upTo } });
      } catch (err) {
        this.reading = 0;
        if (this.alive) $("conversation-error").innerHTML = errorBox(err);
        return;
      }
      const now = new Date().toISOString();
      for (const m of theirs) if (m.id <= upTo && !m.read_at) m.read_at = now;
      inbox.soon();
    }

    async send() {
      const box = $("message-body");
      const body = box.value;
      if (!body.trim() || !this.ref) return;
      const button = $("message-send");
      button.disabled = true;
      $("message-result").innerHTML = "";
      try {
        const sent = await api(this.path(), { method: "POST", body: { body } });
        if (!this.alive) return;
        box.value = "";
        this.add([sent]);
        this.render(true);
      } catch (err) {
        if (this.alive) $("message-result").innerHTML = errorBox(err);
      } finally {
        button.disabled = false;
        if (this.alive) box.focus();
      }
    }
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
})();
