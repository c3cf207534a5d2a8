/** Formatting: the `html` template tag that escapes what it inserts, money, energy, dates and badges. */
import { MICROPENCE_PER_PENNY } from "./settings.js";

// ---------------------------------------------------------------- escaping

/** A piece of HTML that is already safe (built by `html`), inserted as it is. */
export class SafeHtml {
  constructor(text) { this.text = text; }
  toString() { return this.text; }
}

export function escapeHtml(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

export function insert(value) {
  if (value instanceof SafeHtml) return value.text;
  if (Array.isArray(value)) return value.map(insert).join("");
  return escapeHtml(value);
}

/** Template tag: every interpolated value is escaped unless it is SafeHtml (or a list of it). */
export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((value, i) => { out += insert(value) + strings[i + 1]; });
  return new SafeHtml(out);
}

// ---------------------------------------------------------------- formatting

export const dateTimeFormat = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium", timeStyle: "short" });
export const dateFormat = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium" });
export const hourFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

/** Micropence as pounds and pence, half a penny rounding up (as the server's statements do). */
export function pounds(micropence) {
  const value = Number(micropence);
  const sign = value < 0 ? "-" : "";  // in credit: the amount rounds as common.tariff.format_pounds does
  const abs = Math.floor((Math.abs(value) + MICROPENCE_PER_PENNY / 2) / MICROPENCE_PER_PENNY);
  return `${sign}£${Math.floor(abs / 100).toLocaleString("en-GB")}.${String(abs % 100).padStart(2, "0")}`;
}

/** The tariff version in force now (the list is newest first; versions may be scheduled ahead). */
export function inForce(tariffs) {
  const now = Date.now();
  return tariffs.find((t) => new Date(t.effective_from).getTime() <= now) || tariffs[tariffs.length - 1] || null;
}

export function describePricing(pricing) {
  if (!pricing) return "—";
  if (pricing.kind === "banded") return "time of use";
  if (pricing.kind === "day_ahead") return "day-ahead";
  return `${pencePerUnit(pricing.rate)} p/kWh`;
}

export function kwh(wh, digits = 2) {
  return (Number(wh) / 1000).toLocaleString("en-GB", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function pencePerUnit(millipence) {
  return (Number(millipence) / 1000).toLocaleString("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 3 });
}

export function when(iso) { return iso ? dateTimeFormat.format(new Date(iso)) : "—"; }
export function day(iso) { return iso ? dateFormat.format(new Date(iso)) : "—"; }
export function shortAddress(address) { return `${address.slice(0, 6)}…${address.slice(-4)}`; }
export function sameAddress(a, b) { return String(a).toLowerCase() === String(b).toLowerCase(); }

/** A local calendar date as YYYY-MM-DD. */
export function isoDate(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The local midnight starting a YYYY-MM-DD date, and the one after it. */
export function dayBounds(value) {
  const [y, m, d] = value.split("-").map(Number);
  return [new Date(y, m - 1, d), new Date(y, m - 1, d + 1)];
}

export function badge(text, kind) { return html`<span class="badge badge-${kind}">${text}</span>`; }
export function statusBadge(status) { return badge(status, status === "active" ? "ok" : "muted"); }
export function connectedBadge(connected) {
  return connected ? badge("connected", "ok") : badge("not connected", "muted");
}
/** A bill whose newest reading is in a block not final yet: a reorganisation may still change it. */
export function provisionalBadge(bill) {
  return bill.final === false
    ? html` <span class="badge badge-warning provisional" title="its newest reading is in a block not final yet">provisional</span>`
    : "";
}
