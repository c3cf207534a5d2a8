/** The fleet page (#/): every meter in a table kept current by live messages, with the alerts beside it. */
import { RECENT_ALERTS } from "./settings.js";
import { connectedBadge, describePricing, html, inForce, kwh, pencePerUnit, pounds, provisionalBadge, sameAddress, shortAddress, statusBadge, when } from "./format.js";
import { api, errorBox, query } from "./api.js";
import { alertItem, consumptionItem, list, newest, remember, updateCell } from "./widgets.js";
import { $ } from "./app.js";

// ---------------------------------------------------------------- fleet view

/** Every meter in a table kept current by live messages, with the alerts beside it. */
export class FleetView {
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
