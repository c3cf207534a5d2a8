/** The meter page (#/meter/<address>): its frame, its live state and its bill; the charts and the history are mixed in. */
import { RELOAD_DELAY_MS } from "./settings.js";
import { connectedBadge, html, isoDate, kwh, pounds, provisionalBadge, sameAddress, shortAddress, statusBadge, when } from "./format.js";
import { api, errorBox } from "./api.js";
import { mixin, newest, remember, updateCell } from "./widgets.js";
import { MeterCharts } from "./meter-charts.js";
import { MeterHistory } from "./meter-history.js";
import { $, session } from "./app.js";

// ---------------------------------------------------------------- meter view

/** One meter's page: loaded whole (again at each live (re)connection), kept current from live messages. */
export class MeterView {
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
}

mixin(MeterView, MeterCharts, MeterHistory);
