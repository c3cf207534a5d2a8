// The demand-response baseline, rewritten in BigInt from the method's published rules (the header of
// common/baseline.py, after National Grid ESO's Demand Flexibility Service) and without any of the
// project's own code: what a meter would have used in an event's window had there been no event.
//
// 1. The energy of each UTC half hour is the contract's own split of each reading's import delta (`split`).
// 2. Baseline days: the up to 10 most recent days, looking back at most 28, whose same window the readings
//    cover and in which no event that was not cancelled was active; fewer than 3 and there is no baseline.
// 3. Unadjusted baseline: the mean over those days of the window's energy.
// 4. In-day adjustment: the event day's energy in the 3 hours ending 1 hour before the start, minus the
//    baseline days' mean over those hours, scaled to the window's length; none when the readings do not
//    cover those hours on the event day or on any baseline day.
// 5. Baseline Wh: the adjusted mean rounded down, never below 0 (one exact division, no fractions lost), and
//    never above what the supply can deliver over the window (`boundWh`: the DemandResponse contract's
//    maxPowerW for the window's length, rounded down; the contract refuses a larger baseline).
//
// Nothing here does I/O: `Usage` is filled from a meter's MeterRegistered and ReadingRecorded events.

import { DAY, PERIOD, split } from "./bill.mjs";

export const BASELINE_DAYS = 10;
export const LOOKBACK_DAYS = 28n;
export const MIN_BASELINE_DAYS = 3;
export const ADJUSTMENT_SECONDS = 3n * 3600n;
export const ADJUSTMENT_GAP_SECONDS = 3600n;

/** A meter's import energy per UTC half hour and the span of time its readings cover. */
export class Usage {
  constructor(openedAt, openingWh) {
    this.byPeriod = new Map(); // period -> Wh
    this.first = BigInt(openedAt);
    this.last = this.first;
    this.register = BigInt(openingWh);
  }

  /** The next reading (time, import register): its delta split over the half hours since the last one. */
  add(at, registerWh) {
    const t = BigInt(at);
    const value = BigInt(registerWh);
    if (t <= this.last) throw new RangeError(`a reading at ${t} does not follow the one at ${this.last}`);
    for (const [p, wh] of split(this.last, t, value - this.register)) {
      this.byPeriod.set(p, (this.byPeriod.get(p) ?? 0n) + wh);
    }
    this.last = t;
    this.register = value;
  }

  /** Wh imported in [start, end) (period boundaries), or null when the readings do not cover it. */
  energy(start, end) {
    if (start < this.first || end > this.last) return null;
    let total = 0n;
    for (let p = start / PERIOD; p < end / PERIOD; p += 1n) total += this.byPeriod.get(p) ?? 0n;
    return total;
  }
}

/** A meter's half-hourly usage from its opening [time, register] and readings [time, register] in order. */
export function halfHourly(opening, readings) {
  const usage = new Usage(opening[0], opening[1]);
  for (const [at, registerWh] of readings) usage.add(at, registerWh);
  return usage;
}

/** Whether [start, end) overlaps any of the windows [s, e). */
function overlaps(start, end, windows) {
  return windows.some(([s, e]) => s < end && start < e);
}

/**
 * Baseline and actual Wh of the window [start, end) by the method above, and the baseline days used:
 * `{ baselineWh, actualWh, days }`, `baselineWh` null when fewer than 3 days qualify; null when the
 * readings do not cover the window itself. `windows` are the [start, end) of every event not cancelled;
 * `boundWh` the most a baseline may be (null: no bound).
 */
export function measure(usage, start, end, windows, boundWh = null) {
  const actualWh = usage.energy(start, end);
  if (actualWh === null) return null;
  const adjStart = start - ADJUSTMENT_GAP_SECONDS - ADJUSTMENT_SECONDS;
  const adjEnd = start - ADJUSTMENT_GAP_SECONDS;
  const eventDay = usage.energy(adjStart, adjEnd);
  let adjustable = eventDay !== null;
  const days = [];
  let windowTotal = 0n;
  let adjTotal = 0n;
  for (let k = 1n; k <= LOOKBACK_DAYS && days.length < BASELINE_DAYS; k += 1n) {
    const shift = k * DAY;
    const window = usage.energy(start - shift, end - shift);
    if (window === null || overlaps(start - shift, end - shift, windows)) continue;
    const before = usage.energy(adjStart - shift, adjEnd - shift);
    days.push(start - shift);
    windowTotal += window;
    if (before === null) adjustable = false;
    else adjTotal += before;
  }
  if (days.length < MIN_BASELINE_DAYS) return { baselineWh: null, actualWh, days };
  // windowTotal / n + (eventDay - adjTotal / n) x (end - start) / 3 h, over the one denominator n x 3 h.
  const n = BigInt(days.length);
  let numerator = windowTotal * ADJUSTMENT_SECONDS;
  if (adjustable) numerator += (eventDay * n - adjTotal) * (end - start);
  const mean = numerator > 0n ? numerator / (n * ADJUSTMENT_SECONDS) : 0n;
  const baselineWh = boundWh !== null && mean > boundWh ? boundWh : mean;
  return { baselineWh, actualWh, days };
}
