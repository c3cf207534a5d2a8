/** The meter page's history: bills and statements, grid alerts on a timeline, consumption alerts, the threshold. */
import { badge, day, html, kwh, pounds, when } from "./format.js";
import { api, download, errorBox, query } from "./api.js";
import { consumptionItem, list } from "./widgets.js";
import { $, session } from "./app.js";

/** The history sections of `MeterView`, mixed into it (their `this` is the meter page). */
export class MeterHistory {
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
