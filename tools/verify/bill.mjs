// The bill arithmetic, rewritten from the contract's published rules (docs/tariffs.md and the
// contract's NatSpec), in BigInt and without any of the project's own code: a second
// implementation to hold the contract's figures against.
//
// Units: energy in Wh; prices in millipence per kWh (so Wh x price = micropence, exact);
// standing charges in millipence per day; amounts in micropence. A settlement period p is the
// UTC half hour [1800 p, 1800 (p + 1)).
//
// Nothing here does I/O: `Schedule` is filled from TariffChanged, TariffWithdrawn, ClockChangeAdded,
// ClockChangeWithdrawn and DayAheadPricesPublished events, `Replay` takes every meter's events in chain order and keeps
// what each bill should be, noting where an event or the contract's view says otherwise.

export const PERIOD = 1800n;
export const DAY = 86400n;
export const PERIODS_PER_DAY = 48n;
export const FLAT = 0n;
export const BANDED = 1n;
export const DAY_AHEAD = 2n;
export const CLOCK_GMT = 0n;
const MASK32 = (1n << 32n) - 1n;
const MASK48 = (1n << 48n) - 1n;
const MASK47 = (1n << 47n) - 1n;

/** Euclid's remainder (BigInt's % keeps the dividend's sign). */
function mod(a, n) {
  const r = a % n;
  return r < 0n ? r + n : r;
}

/**
 * The contract's RejectReason values whose refusal uses up the reading's sequence number (StaleTimestamp,
 * FutureTimestamp, RegisterDecreased, ImplausibleDelta, PeriodOverflow; `common/tariff.py` USES_UP_SEQ).
 */
export const USES_UP_SEQ = new Set([4, 5, 6, 7, 9]);

/** The fields of a ReadingRecorded event's packed `record` word (the contract's NatSpec gives the layout). */
export function unpackRecord(record) {
  const word = BigInt(record);
  return {
    seq: word & MASK32,
    timestamp: (word >> 32n) & MASK32,
    importWh: (word >> 64n) & MASK48,
    exportWh: (word >> 112n) & MASK48,
    periodImportCost: (word >> 160n) & MASK48,
    periodExportCredit: (word >> 208n) & MASK47,
  };
}

/** `delta` Wh used over the seconds [t0, t1) split over the periods it spans in proportion to time, as
 * [period, Wh] for every period touched: the Wh up to each boundary is rounded down (cumulative floors) and
 * a period gets the difference between its two boundaries, so the parts add up to `delta` exactly. */
export function split(t0, t1, delta) {
  const first = t0 / PERIOD;
  const last = (t1 - 1n) / PERIOD;
  const span = t1 - t0;
  const parts = [];
  let done = 0n;
  for (let p = first; p < last; p += 1n) {
    const cum = (delta * ((p + 1n) * PERIOD - t0)) / span;
    parts.push([p, cum - done]);
    done = cum;
  }
  parts.push([last, delta - done]);
  return parts;
}

/** Every tariff version, the UK clock changes and the day-ahead prices, as published on chain. */
export class Schedule {
  constructor() {
    this.versions = []; // by version number, 1 first
    this.clock = []; // [at, offset in half hours], in time order
    this.prices = [new Map(), new Map()]; // side (0 import, 1 export) -> period -> millipence per kWh
  }

  /** A TariffChanged event's version. */
  addVersion(args) {
    const v = {};
    for (const key of ["version", "effectiveFrom", "standingCharge", "clock", "importKind", "importRate",
      "importBands", "importBandRates", "exportKind", "exportRate", "exportBands", "exportBandRates"]) {
      v[key] = BigInt(args[key]);
    }
    this.versions[Number(v.version) - 1] = v;
  }

  /** A TariffWithdrawn event: the newest version never took effect (the next one added takes its number). */
  withdrawVersion(version) {
    this.versions.length = Math.min(this.versions.length, Number(version) - 1);
  }

  /** A ClockChangeWithdrawn event: the change at `at` never took effect. */
  withdrawClockChange(at) {
    this.clock = this.clock.filter(([when]) => when !== BigInt(at));
  }

  /** A ClockChangeAdded event: from `at` on, the UK clock is `offsetMinutes` ahead of UTC. */
  addClockChange(at, offsetMinutes) {
    this.clock.push([BigInt(at), BigInt(offsetMinutes) / 30n]);
    this.clock.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  /** A DayAheadPricesPublished event: prices for consecutive periods from `from` (an empty side is left as it was). */
  publish(from, importPrices, exportPrices) {
    const first = BigInt(from) / PERIOD;
    [importPrices, exportPrices].forEach((list, side) => {
      list.forEach((price, i) => this.prices[side].set(first + BigInt(i), BigInt(price)));
    });
  }

  /** The version in force at `t`: the last whose start is at or before it. */
  versionAt(t) {
    let found = this.versions[0];
    for (const v of this.versions) if (v !== undefined && v.effectiveFrom <= t) found = v;
    return found;
  }

  /** The UK clock's offset at `t` in half hours: the last change at or before `t`, 0 before the first. */
  offsetAt(t) {
    let offset = 0n;
    for (const [at, halfHours] of this.clock) {
      if (at > t) break;
      offset = halfHours;
    }
    return offset;
  }

  /** Import and export prices of period `p` (millipence per kWh). */
  pricesOf(p) {
    const t = p * PERIOD;
    const v = this.versionAt(t);
    const banded = v.importKind === BANDED || v.exportKind === BANDED;
    const h = v.clock === CLOCK_GMT || !banded ? mod(p, PERIODS_PER_DAY) : mod(p + this.offsetAt(t), PERIODS_PER_DAY);
    const side = (kind, rate, bands, rates, index) => {
      if (kind === FLAT) return rate;
      if (kind === BANDED) return (rates >> (32n * ((bands >> (3n * h)) & 7n))) & MASK32;
      const published = this.prices[index].get(p);
      return published === undefined ? rate : published;
    };
    return [side(v.importKind, v.importRate, v.importBands, v.importBandRates, 0),
      side(v.exportKind, v.exportRate, v.exportBands, v.exportBandRates, 1)];
  }

  /** The standing charge for the seconds [start, end): each version's daily charge for the seconds it was in
   * force, summed, then rounded down once. */
  standingCharge(start, end) {
    if (end <= start) return 0n;
    let total = 0n;
    const versions = this.versions.filter((v) => v !== undefined);
    versions.forEach((v, i) => {
      const until = i + 1 < versions.length ? versions[i + 1].effectiveFrom : end;
      const lo = v.effectiveFrom > start ? v.effectiveFrom : start;
      const hi = until < end ? until : end;
      if (hi > lo) total += (hi - lo) * v.standingCharge;
    });
    return (total * 1000n) / DAY;
  }

  /** Import cost and export credit (micropence) of `dImport` and `dExport` Wh used over the seconds [t0, t1):
   * each split over the periods in proportion to time (`split`) and each part priced at its period's price. */
  cost(t0, t1, dImport, dExport) {
    let cost = 0n;
    let credit = 0n;
    const exports = split(t0, t1, dExport);
    split(t0, t1, dImport).forEach(([p, partImport], i) => {
      const partExport = exports[i][1];
      if (partImport !== 0n || partExport !== 0n) {
        const [priceIn, priceOut] = this.pricesOf(p);
        cost += partImport * priceIn;
        credit += partExport * priceOut;
      }
    });
    return { cost, credit };
  }
}

/** Micropence as pounds and pence, half a penny rounding up: `£12.34`, `-£1.20` in credit. */
export function pounds(micropence) {
  const m = BigInt(micropence);
  const pence = ((m < 0n ? -m : m) + 500000n) / 1000000n;
  const whole = (pence / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${m < 0n ? "-" : ""}£${whole}.${(pence % 100n).toString().padStart(2, "0")}`;
}

/** Wh as kWh with three decimals. */
export function kwh(wh) {
  const w = BigInt(wh);
  return `${(w / 1000n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",")}.${(w % 1000n).toString().padStart(3, "0")}`;
}

const BILL_FIELDS = [
  ["periodId", "period number"], ["periodStart", "period start"], ["periodEnd", "period end"],
  ["importWh", "import Wh"], ["exportWh", "export Wh"], ["importCost", "import charge"],
  ["exportCredit", "export credit"], ["standingCharge", "standing charge"], ["amountDue", "amount due"],
];

/** Every meter's bills recomputed from its events, in chain order, with every disagreement noted. */
export class Replay {
  constructor(schedule) {
    this.schedule = schedule;
    this.meters = new Map(); // lower-case address -> state
  }

  meter(address) {
    return this.meters.get(address.toLowerCase());
  }

  /** MeterRegistered: the first period opens at `openedAt` with the import register at `openingWh`. */
  register(args, where) {
    const openedAt = BigInt(args.openedAt);
    this.meters.set(args.meter.toLowerCase(), {
      address: args.meter, periodId: 1n, periodStart: openedAt, startImport: BigInt(args.openingWh),
      startExport: 0n, lastSeq: 0n, lastTimestamp: openedAt, importWh: BigInt(args.openingWh), exportWh: 0n,
      cost: 0n, credit: 0n, readings: 0, bills: [], problems: [], registeredAt: where,
    });
  }

  /** ReadingRecorded: accrue the energy since the last reading and hold the event's running totals to ours. */
  reading(args, where) {
    const m = this.meter(args.meter);
    const r = unpackRecord(args.record);
    if (m === undefined) return;
    const note = (text) => m.problems.push(`reading ${r.seq} (${where}): ${text}`);
    if (r.seq <= m.lastSeq || r.timestamp <= m.lastTimestamp || r.importWh < m.importWh || r.exportWh < m.exportWh) {
      note("out of order: its sequence number, time or registers do not follow the reading before");
      return;
    }
    if (r.seq !== m.lastSeq + 1n) {
      // The contract takes a meter's readings in an unbroken sequence (a refusal for a reading's content uses
      // its number up, see rejected()): a gap means a signed reading was left out and its energy billed later.
      note(`follows reading ${m.lastSeq}: readings ${m.lastSeq + 1n} to ${r.seq - 1n} are neither recorded nor refused`);
    }
    const { cost, credit } = this.schedule.cost(m.lastTimestamp, r.timestamp, r.importWh - m.importWh,
      r.exportWh - m.exportWh);
    m.cost += cost;
    m.credit += credit;
    if (r.periodImportCost !== m.cost) {
      note(`the event says the period's import charge is ${r.periodImportCost}, recomputed ${m.cost} micropence`);
      m.cost = r.periodImportCost; // report each wrong reading once, not every one after it
    }
    if (r.periodExportCredit !== m.credit) {
      note(`the event says the period's export credit is ${r.periodExportCredit}, recomputed ${m.credit} micropence`);
      m.credit = r.periodExportCredit;
    }
    Object.assign(m, { lastSeq: r.seq, lastTimestamp: r.timestamp, importWh: r.importWh, exportWh: r.exportWh });
    m.readings += 1;
  }

  /** ReadingRejected: a refusal for the reading's content uses up its sequence number (the registers stay). */
  rejected(args, where) {
    const m = this.meter(args.meter);
    if (m === undefined || !USES_UP_SEQ.has(Number(args.reason))) return;
    const seq = BigInt(args.seq);
    if (seq !== m.lastSeq + 1n) {
      m.problems.push(`refusal of reading ${seq} (${where}): follows ${m.lastSeq}, not the next number`);
    }
    if (seq > m.lastSeq) m.lastSeq = seq;
  }

  /** The final read of a meter exchange or register reset (its `finalRecord`, in ReadingRecorded's layout): at the
   * last reading's time it must repeat its registers and adds nothing; later, its energy is accrued as a reading's
   * is. Either way the event's running totals are held to ours. */
  finalRead(m, args, where, what) {
    const r = unpackRecord(args.finalRecord);
    const note = (text) => m.problems.push(`${what} (${where}): ${text}`);
    if (r.seq !== m.lastSeq) note(`its final read says the last seq is ${r.seq}, recomputed ${m.lastSeq}`);
    if (r.timestamp === m.lastTimestamp) {
      if (r.importWh !== m.importWh || r.exportWh !== m.exportWh) note("its final read moves the registers without time");
    } else if (r.timestamp < m.lastTimestamp || r.importWh < m.importWh || r.exportWh < m.exportWh) {
      note("its final read does not follow the last reading (time or registers)");
    } else {
      const { cost, credit } = this.schedule.cost(m.lastTimestamp, r.timestamp, r.importWh - m.importWh,
        r.exportWh - m.exportWh);
      m.cost += cost;
      m.credit += credit;
    }
    if (r.periodImportCost !== m.cost || r.periodExportCredit !== m.credit) {
      note(`the event says the period's charge and credit are ${r.periodImportCost} and ${r.periodExportCredit}, `
        + `recomputed ${m.cost} and ${m.credit} micropence`);
      m.cost = r.periodImportCost;
      m.credit = r.periodExportCredit;
    }
    Object.assign(m, { lastTimestamp: r.timestamp, importWh: r.importWh, exportWh: r.exportWh });
  }

  /** The registers restart at `importWh` and `exportWh` (sequence 0): the period's start registers move with them,
   * so that the period keeps the energy it had. */
  static restartRegisters(m, importWh, exportWh) {
    Object.assign(m, { lastSeq: 0n, startImport: m.startImport + importWh - m.importWh,
      startExport: m.startExport + exportWh - m.exportWh, importWh, exportWh });
  }

  /** MeterExchanged: the old meter's final read, then the new meter takes over its open period (number, start,
   * energy, charge and credit) with its own registers; the old one is left with an empty period. */
  exchange(args, where) {
    const m = this.meter(args.meter);
    if (m === undefined) return;
    const before = m.problems.length;
    this.finalRead(m, args, where, `exchange for ${args.newMeter}`);
    // A wrong final read is wrong on both meters' rows: the new one's open bill carries it.
    const successor = { ...m, address: args.newMeter, readings: 0, bills: [], problems: m.problems.slice(before),
      registeredAt: where };
    Replay.restartRegisters(successor, BigInt(args.openingImportWh), BigInt(args.openingExportWh));
    this.meters.set(args.newMeter.toLowerCase(), successor);
    Object.assign(m, { retiredFor: args.newMeter, periodStart: m.lastTimestamp, startImport: m.importWh,
      startExport: m.exportWh, cost: 0n, credit: 0n });
  }

  /** RegisterReset: the final read, then the registers and the sequence restart; the open period goes on. */
  reset(args, where) {
    const m = this.meter(args.meter);
    if (m === undefined) return;
    this.finalRead(m, args, where, "register reset");
    Replay.restartRegisters(m, BigInt(args.importWh), BigInt(args.exportWh));
  }

  /** The open period's figures as they should be now. */
  openFigures(m) {
    const standingCharge = this.schedule.standingCharge(m.periodStart, m.lastTimestamp);
    return {
      periodId: m.periodId, periodStart: m.periodStart, periodEnd: m.lastTimestamp,
      importWh: m.importWh - m.startImport, exportWh: m.exportWh - m.startExport, importCost: m.cost,
      exportCredit: m.credit, standingCharge, amountDue: m.cost + standingCharge - m.credit,
    };
  }

  /** The differences between our figures and the contract's, as sentences. */
  static differences(ours, theirs) {
    return BILL_FIELDS.filter(([key]) => BigInt(theirs[key]) !== ours[key])
      .map(([key, name]) => `${name}: the contract says ${BigInt(theirs[key])}, recomputed ${ours[key]}`);
  }

  /** BillIssued: hold the issued bill to ours, then open the next period where it ended. */
  issue(args, where) {
    const m = this.meter(args.meter);
    if (m === undefined) return;
    const ours = this.openFigures(m);
    const wrong = Replay.differences(ours, args);
    m.bills.push({ periodId: ours.periodId, amountDue: BigInt(args.amountDue), agrees: wrong.length === 0, where });
    for (const text of wrong) m.problems.push(`issued bill of period ${ours.periodId} (${where}): ${text}`);
    Object.assign(m, { periodId: m.periodId + 1n, periodStart: m.lastTimestamp, startImport: m.importWh,
      startExport: m.exportWh, cost: 0n, credit: 0n });
  }

  /** The contract's openBill view, held to ours. */
  checkOpen(address, view) {
    const m = this.meter(address);
    const ours = this.openFigures(m);
    m.open = ours;
    for (const text of Replay.differences(ours, view)) m.problems.push(`open bill of period ${ours.periodId}: ${text}`);
  }
}
