/** The meter page's charts: a day's consumption by the hour, demand-response windows and baselines, half-hourly costs. */
import { HOUR_MS } from "./settings.js";
import { dayBounds, hourFormat, html, isoDate, kwh, pencePerUnit, pounds } from "./format.js";
import { api, errorBox, query } from "./api.js";
import { $ } from "./app.js";

/** The charts of `MeterView`, mixed into it (their `this` is the meter page). */
export class MeterCharts {
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
}
