/** Pieces the pages share: a cell that flashes when it changes, alert items, meter names, lists, and `mixin`. */
import { HIGHLIGHT_MS } from "./settings.js";
import { badge, html, shortAddress, when } from "./format.js";

/** Replace an element's contents with new HTML, highlighting it when it changed. */
export function updateCell(element, content, flash = true) {
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

export function alertItem(alert) {
  const ends = alert.cleared_at ? `cleared ${when(alert.cleared_at)}` : `until ${when(alert.expires_at)}`;
  return html`<li class="alert alert-${alert.severity}">
    ${badge(alert.severity, alert.severity)}
    <span class="alert-message">${alert.message}</span>
    <span class="muted">${alert.region || "all regions"} · ${alert.kind} · raised ${when(alert.raised_at)}, ${ends}</span>
  </li>`;
}

export function consumptionItem(alert, withMeter) {
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
export function progress(meter) {
  return [meter.open_bill.period_id, meter.last_reading ? meter.last_reading.seq : 0];
}

/**
 * The newer of two states of a meter. A page load answered just before a live bill can arrive
 * just after it; it must not put the older state back.
 */
export function newest(known, loaded) {
  if (!known) return loaded;
  const [a, b] = [progress(known), progress(loaded)];
  return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]) ? known : loaded;
}

export const knownNames = new Map();
export function meterName(address) { return knownNames.get(address.toLowerCase()) || shortAddress(address); }
export function remember(meter) { knownNames.set(meter.address.toLowerCase(), meter.name || shortAddress(meter.address)); }

export function list(items, empty) {
  return items.length ? html`${items}` : html`<li class="empty muted">${empty}</li>`;
}

/** Copy the methods of each of `parts` (classes) onto `view`'s: one page's concerns kept in several modules. */
export function mixin(view, ...parts) {
  for (const part of parts) {
    for (const name of Object.getOwnPropertyNames(part.prototype)) {
      if (name !== "constructor") Object.defineProperty(view.prototype, name, Object.getOwnPropertyDescriptor(part.prototype, name));
    }
  }
}
