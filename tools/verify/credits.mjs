// Every demand-response credit recomputed from the chain alone and held to the CreditApplied event that
// recorded it: the meter's baseline and actual Wh over the event's window (tools/verify/baseline.mjs), the
// amount (the reduction, baseline minus actual and none when actual is higher, times the event's credit
// rate: Wh x millipence/kWh = micropence, exact) and the billing period it went on (the meter's open one).
// A baseline is at most what the supply can deliver over the window: the contract's maxPowerW for the window's
// length, rounded down (the contract refuses more). An opt-out holds for the modification of the event it was
// signed for: a change of the event lapses it, and a withdrawal undoes it.
//
// Nothing here does I/O: `Credits` takes the DemandResponse contract's events and the billing contract's
// MeterRegistered and ReadingRecorded events in chain order, and checks the credits at the end.

import { unpackRecord } from "./bill.mjs";
import { halfHourly, measure, MIN_BASELINE_DAYS } from "./baseline.mjs";

/** The key of one meter in one event. */
function key(eventId, meter) {
  return `${BigInt(eventId)}:${meter.toLowerCase()}`;
}

/** The credits on chain and what they are recomputed from. */
export class Credits {
  /** `maxPowerW`: the DemandResponse contract's bound on supply power (W), or null (no bound). */
  constructor(maxPowerW = null) {
    this.maxPowerW = maxPowerW === null ? null : BigInt(maxPowerW);
    this.events = new Map(); // event id -> { modification, start, end, creditRate }
    this.cancelled = new Set(); // event ids
    this.optedOut = new Map(); // key(event, meter) -> the modification the opt-out was signed for
    this.meters = new Map(); // lower-case address -> { opening: [time, Wh], readings: [[time, Wh]...] }
    this.records = []; // CreditApplied events, with the meter's open period then
  }

  /** DemandResponseEvent: an event created or changed; its latest modification's terms are the ones that hold. */
  announce(args) {
    const id = BigInt(args.id);
    const modification = BigInt(args.modification);
    const known = this.events.get(id);
    if (known !== undefined && known.modification > modification) return;
    const start = BigInt(args.terms.start);
    this.events.set(id, { modification, start, end: start + BigInt(args.terms.duration),
      creditRate: BigInt(args.terms.creditRate) });
  }

  /** DemandResponseCancelled: the event never ran (its window makes no day unfit for a baseline). */
  cancel(args) {
    this.cancelled.add(BigInt(args.id));
  }

  /** OptedOut: the meter is owed nothing for the event, as long as its terms are the ones it signed. */
  optOut(args) {
    this.optedOut.set(key(args.eventId, args.meter), BigInt(args.modification));
  }

  /** OptOutWithdrawn: the meter takes part again. */
  withdraw(args) {
    this.optedOut.delete(key(args.eventId, args.meter));
  }

  /** The most Wh a baseline may be over [start, end) (null: no bound known). */
  boundWh(start, end) {
    return this.maxPowerW === null ? null : this.maxPowerW * (end - start) / 3600n;
  }

  /** MeterRegistered: the meter's opening time and import register, where its usage starts. */
  register(args) {
    this.meters.set(args.meter.toLowerCase(), { opening: [BigInt(args.openedAt), BigInt(args.openingWh)],
      readings: [] });
  }

  /** ReadingRecorded: the reading's time and import register. */
  reading(args) {
    const m = this.meters.get(args.meter.toLowerCase());
    if (m === undefined) return;
    const r = unpackRecord(args.record);
    m.readings.push([r.timestamp, r.importWh]);
  }

  /** CreditApplied: a credit to check, with the meter's open billing period at that point (undefined: unknown). */
  applied(args, where, openPeriod) {
    this.records.push({
      eventId: BigInt(args.eventId), meter: args.meter, periodId: BigInt(args.periodId),
      baselineWh: BigInt(args.baselineWh), actualWh: BigInt(args.actualWh), amount: BigInt(args.amount),
      openPeriod, where,
    });
  }

  /** The [start, end) of every event not cancelled. */
  windows() {
    return [...this.events].filter(([id]) => !this.cancelled.has(id)).map(([, e]) => [e.start, e.end]);
  }

  /** The meter's usage, or a sentence saying why there is none. */
  usageOf(meter) {
    const m = this.meters.get(meter.toLowerCase());
    if (m === undefined) return { why: "the meter is not registered on the billing contract" };
    try {
      return { usage: halfHourly(m.opening, m.readings) };
    } catch (err) {
      return { why: `its readings cannot be split into half hours (${err.message})` };
    }
  }

  /** The figures the chain gives for one credit: `{ measured }` or `{ why }` it has no credit to give. */
  recompute(record, windows, usages) {
    const event = this.events.get(record.eventId);
    if (event === undefined) return { why: "the contract announced no such event" };
    if (this.cancelled.has(record.eventId)) return { why: "the event was cancelled" };
    if (this.optedOut.get(key(record.eventId, record.meter)) === event.modification) return { why: "it opted out" };
    const lower = record.meter.toLowerCase();
    if (!usages.has(lower)) usages.set(lower, this.usageOf(record.meter));
    const { usage, why } = usages.get(lower);
    if (usage === undefined) return { why };
    const m = measure(usage, event.start, event.end, windows, this.boundWh(event.start, event.end));
    if (m === null) return { why: "the readings do not cover the event's window" };
    if (m.baselineWh === null) {
      return { why: `only ${m.days.length} baseline days (${MIN_BASELINE_DAYS} needed), so no baseline` };
    }
    const reduction = m.baselineWh > m.actualWh ? m.baselineWh - m.actualWh : 0n;
    return { measured: { baselineWh: m.baselineWh, actualWh: m.actualWh, amount: reduction * event.creditRate,
      days: m.days.length } };
  }

  /** The differences between a credit and its recomputation, as sentences. */
  static differences(record, measured) {
    const wrong = [];
    if (record.baselineWh !== measured.baselineWh) {
      wrong.push(`baseline ${record.baselineWh} Wh, recomputed ${measured.baselineWh} Wh`);
    }
    if (record.actualWh !== measured.actualWh) {
      wrong.push(`actual ${record.actualWh} Wh, recomputed ${measured.actualWh} Wh`);
    }
    if (record.amount !== measured.amount) {
      wrong.push(`credit ${record.amount} micropence, recomputed ${measured.amount}`);
    }
    if (record.openPeriod !== undefined && record.periodId !== record.openPeriod) {
      wrong.push(`put on billing period ${record.periodId}, but the meter's open period was ${record.openPeriod}`);
    }
    return wrong;
  }

  /** Every credit recomputed and compared: one row each, in chain order. */
  check() {
    const windows = this.windows();
    const usages = new Map();
    return this.records.map((record) => {
      const { measured, why } = this.recompute(record, windows, usages);
      const problems = measured === undefined
        ? [`credited ${record.amount} micropence, but ${why}`] : Credits.differences(record, measured);
      return { ...record, recomputed: measured ?? null, agrees: problems.length === 0, problems };
    });
  }
}
