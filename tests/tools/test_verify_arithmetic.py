"""The verifier's arithmetic (tools/verify/bill.mjs) against the Python reference (common/tariff.py) on random
schedules and readings across both UK clock changes: two implementations written apart must give the same
micropence for every reading and every standing charge; and its demand-response baseline (baseline.mjs)
against common/baseline.py on random readings, gaps and event windows, to the Wh."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

from common.baseline import credit_bound_wh, half_hourly, measure
from common.settings import ROOT
from common.tariff import (
    BANDED,
    CLOCK_GMT,
    CLOCK_LOCAL,
    DAY_AHEAD,
    FLAT,
    USES_UP_SEQ,
    ClockTable,
    PriceRule,
    Schedule,
    TariffVersion,
    cost_of,
    standing_charge,
    uk_clock_changes,
)

#: Spring and autumn 2026 clock changes fall inside [START, START + 220 days).
START = 1_772_323_200  # 2026-03-01 00:00 UTC
HARNESS = """
import { readFileSync } from "node:fs";
import { Schedule } from "./tools/verify/bill.mjs";
const data = JSON.parse(readFileSync(0, "utf8"));
const s = new Schedule();
data.versions.forEach((v) => s.addVersion(v));
data.clock.forEach(([at, minutes]) => s.addClockChange(at, minutes));
for (const [from, imports, exports] of data.published) s.publish(from, imports, exports);
const out = data.cases.map(([t0, t1, di, de]) => {
  const { cost, credit } = s.cost(BigInt(t0), BigInt(t1), BigInt(di), BigInt(de));
  return [cost.toString(), credit.toString(), s.standingCharge(BigInt(t0), BigInt(t1)).toString()];
});
process.stdout.write(JSON.stringify(out));
"""


def rule(rng: random.Random) -> PriceRule:
    kind = rng.choice([FLAT, BANDED, DAY_AHEAD])
    if kind == FLAT:
        return PriceRule.flat(rng.randrange(0, 60_000))
    if kind == DAY_AHEAD:
        return PriceRule.day_ahead(rng.randrange(0, 60_000))
    return PriceRule.banded([rng.randrange(8) for _ in range(48)], [rng.randrange(0, 60_000) for _ in range(8)])


def test_the_verifiers_split_prices_and_standing_charge_match_the_python_reference_to_the_micropence():
    rng = random.Random(16)
    versions = [TariffVersion.flat(24_670, 57_210, 0, 15_000)]
    for k in range(6):
        versions.append(TariffVersion(START + (k * 30 + rng.randrange(25)) * 86_400 + rng.randrange(48) * 1_800,
                                      rng.randrange(0, 80_000), rule(rng), rule(rng),
                                      rng.choice([CLOCK_GMT, CLOCK_LOCAL])))
    schedule = Schedule(versions, ClockTable(tuple(uk_clock_changes(2000, 2030))))
    published = []
    for _ in range(40):
        first = (START + rng.randrange(220 * 86_400)) // 1_800
        imports = [rng.randrange(40_000) for _ in range(48)]
        exports = [rng.randrange(20_000) for _ in range(48)] if rng.random() < 0.7 else []
        schedule.publish(first, imports, exports)
        published.append((first * 1_800, imports, exports))
    cases = []
    for _ in range(2_000):
        t0 = START + rng.randrange(220 * 86_400)
        t1 = t0 + rng.choice([rng.randrange(1, 1_800), rng.randrange(1, 4 * 3_600), rng.randrange(1, 3 * 86_400)])
        cases.append((t0, t1, rng.randrange(0, 30_000), rng.randrange(0, 10_000) if rng.random() < 0.5 else 0))
    data = {
        "versions": [{"version": i + 1, "effectiveFrom": v.effective_from, "standingCharge": v.standing_charge,
                      "clock": v.clock, "importKind": v.import_rule.kind, "importRate": v.import_rule.rate,
                      "importBands": v.import_rule.packed_bands, "importBandRates": v.import_rule.packed_rates,
                      "exportKind": v.export_rule.kind, "exportRate": v.export_rule.rate,
                      "exportBands": v.export_rule.packed_bands, "exportBandRates": v.export_rule.packed_rates}
                     for i, v in enumerate(versions)],
        "clock": schedule.clock.changes,
        "published": published,
        "cases": cases,
    }
    node = shutil.which("node")
    assert node is not None
    # Packed band tables pass 2^53, where a JSON number loses digits in JavaScript: they travel as text.
    for v in data["versions"]:
        for key in ("importBands", "importBandRates", "exportBands", "exportBandRates"):
            v[key] = str(v[key])
    text = json.dumps(data)
    result = subprocess.run([node, "--input-type=module", "-e", HARNESS], cwd=ROOT, input=text, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout)
    ours = [[str(v) for v in (*cost_of(schedule, t0, t1, di, de), standing_charge(versions, t0, t1))]
            for t0, t1, di, de in cases]
    mismatches = [(case, a, b) for case, a, b in zip(cases, ours, theirs, strict=True) if a != b]
    assert mismatches == []
    assert sum(int(c) for c, _, _ in ours) > 0 and any(int(credit) for _, credit, _ in ours)


BASELINE_HARNESS = """
import { readFileSync } from "node:fs";
import { halfHourly, measure } from "./tools/verify/baseline.mjs";
const big = (pair) => pair.map(BigInt);
const out = JSON.parse(readFileSync(0, "utf8")).map(({ opening, readings, start, end, windows, cap }) => {
  const m = measure(halfHourly(big(opening), readings.map(big)), BigInt(start), BigInt(end), windows.map(big),
    cap === null ? null : BigInt(cap));
  return m === null ? null : [m.baselineWh === null ? null : m.baselineWh.toString(), m.actualWh.toString(),
    m.days.map(String)];
});
process.stdout.write(JSON.stringify(out));
"""


Case = tuple[tuple[int, int], list[tuple[int, int]], int, int, list[tuple[int, int]], int | None]


def test_the_verifiers_baseline_matches_the_python_reference_to_the_wh() -> None:
    rng = random.Random(27)
    bounds = random.Random(28)  # the supply's power bound, apart so the households stay as they were
    cases: list[Case] = []
    for _ in range(300):
        opened = START + rng.randrange(40 * 86_400)
        start = (opened + rng.randrange(0, 36 * 86_400)) // 1_800 * 1_800
        end = start + rng.randrange(1, 9) * 1_800
        # Some households use nothing from five hours before the start: the adjustment takes the baseline below 0.
        quiet_from = start - 5 * 3_600 if rng.random() < 0.2 else None
        t, register, readings = opened, rng.randrange(10**6), []
        opening = (opened, register)
        end_of_data = opened + rng.randrange(2, 35) * 86_400
        while t < end_of_data:
            step = rng.choice([rng.randrange(1, 1_800), rng.randrange(900, 5_400), rng.randrange(3_600, 2 * 86_400)])
            power = 0 if quiet_from is not None and t + step > quiet_from else rng.randrange(3_000)
            register += power * step // 3_600
            t += step
            readings.append((t, register))
        windows = [(w, w + rng.randrange(1, 6) * 1_800)
                   for w in ((start - rng.randrange(1, 30) * 86_400 + rng.randrange(-6, 6) * 1_800)
                             for _ in range(rng.randrange(0, 6)))]
        cap = None if bounds.random() < 0.5 else credit_bound_wh(bounds.randrange(3_000), start, end)
        cases.append((opening, readings, start, end, [(start, end), *windows], cap))
    ours: list[tuple[str | None, str, list[str]] | None] = []
    for opening, readings, start, end, windows, cap in cases:
        try:
            m = measure(half_hourly(opening, readings), start, end, windows, cap)
        except ValueError:
            ours.append(None)
            continue
        ours.append((None if m.baseline_wh is None else str(m.baseline_wh), str(m.actual_wh), [str(d) for d in m.days]))
    text = json.dumps([{"opening": o, "readings": r, "start": s, "end": e, "windows": w, "cap": c}
                       for o, r, s, e, w, c in cases])
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run([node, "--input-type=module", "-e", BASELINE_HARNESS], cwd=ROOT, input=text,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    theirs = [None if m is None else tuple(m) for m in json.loads(result.stdout)]
    mismatches = [(case, a, b) for case, a, b in zip(cases, ours, theirs, strict=True) if a != b]
    assert mismatches == []
    measured = [m for m in ours if m is not None and m[0] is not None]
    # Every branch was taken: unmeasurable windows, too few days, the full ten days, a baseline held at 0.
    assert None in ours and any(m is not None and m[0] is None for m in ours)
    assert any(len(m[2]) == 10 for m in measured) and any(m[0] == "0" for m in measured)
    assert any(m is not None and m[0] is not None and int(m[0]) == case[5] > 0
               for case, m in zip(cases, ours, strict=True)), "a baseline held at the supply's bound"
    assert len(measured) > 50


SEQUENCE_HARNESS = """
import { Replay, Schedule, USES_UP_SEQ } from "./tools/verify/bill.mjs";
const s = new Schedule();
s.addVersion({ version: 1n, effectiveFrom: 0n, standingCharge: 0n, clock: 0, importKind: 0, importRate: 0n,
  exportKind: 0, exportRate: 0n, importBands: 0n, importBandRates: 0n, exportBands: 0n, exportBandRates: 0n });
const replay = new Replay(s);
const meter = "0x" + "ab".repeat(20);
replay.register({ meter, openedAt: 1000n, openingWh: 0n }, "registered");
// seq (bits 0-31) and timestamp (bits 32-63); registers, cost and credit 0
const record = (seq, t) => BigInt(seq) | (BigInt(t) << 32n);
replay.reading({ meter, record: record(1, 2000) }, "r1");
replay.rejected({ meter, seq: 2n, reason: 7 }, "refused for its content");
replay.reading({ meter, record: record(3, 3000) }, "r3");
replay.reading({ meter, record: record(5, 4000) }, "r5 after a withheld 4");
process.stdout.write(JSON.stringify({ problems: replay.meter(meter).problems, usesUp: [...USES_UP_SEQ].sort() }));
"""


def test_the_verifier_flags_a_break_in_a_meters_sequence_but_not_a_number_a_refusal_used_up():
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run([node, "--input-type=module", "-e", SEQUENCE_HARNESS], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["usesUp"] == sorted(int(r) for r in USES_UP_SEQ)  # one rule, written twice, kept equal
    assert out["problems"] == ["reading 5 (r5 after a withheld 4): follows reading 3: readings 4 to 4 are neither "
                               "recorded nor refused"]
