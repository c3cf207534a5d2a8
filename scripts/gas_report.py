#!/usr/bin/env python3
"""Print gas per reading for batches of 1, 10 and 100 readings, with the floor arithmetic beside it.

Starts a Ganache of its own (temporary, so it never touches the demo's chain or deployment),
deploys, registers meters, gives each its first reading, then sets a time-of-use tariff (banded
import and export in UK clock time), moves the chain's clock past its start and submits
batches of readings with import and export, each within one settlement period (as live meters'
readings are). A second table shows day-ahead prices and readings that cross a period boundary, and
the last lines demand response: a meter's signed opt-out, its withdrawal, a change of an event and crediting 100
meters in one transaction. The silence table is one reading (a batch of 1) after 1, 7, 30 and 400 days without
one, on the time-of-use tariff, and after 30 days on day-ahead prices published for every half hour of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402

from common.batches import extra_periods, gas_limit_for, pack_reading, submit_readings_calldata  # noqa: E402
from common.billing import Billing  # noqa: E402
from common.chain import ChainClient  # noqa: E402
from common.demand_response import DemandResponse, Signal, Terms  # noqa: E402
from common.deployer import deploy  # noqa: E402
from common.devchain import GanacheProcess  # noqa: E402
from common.eip712 import ReadingData, sign_optout, sign_reading  # noqa: E402
from common.settings import load_settings  # noqa: E402
from common.tariff import CLOCK_LOCAL, PERIOD_SECONDS, PriceRule, TariffVersion  # noqa: E402

#: Off-peak 00:30-05:30 at 8.5 p, peak 16:00-19:00 at 35 p, day rate 24.67 p otherwise (clock time).
BANDS = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]
TIME_OF_USE = TariffVersion(0, 57_210, PriceRule.banded(BANDS, [8_500, 24_670, 35_000]),
                            PriceRule.banded(BANDS, [4_100, 15_000, 25_000]), CLOCK_LOCAL)
DAY_AHEAD = TariffVersion(0, 57_210, PriceRule.day_ahead(24_670), PriceRule.day_ahead(15_000))

#: Opcode costs the floor is made of (Shanghai).
ECRECOVER = 3_000 + 100  # the precompile and a warm staticcall
COLD_SLOAD, SSTORE_CHANGE = 2_100, 2_900
LOG2_ONE_WORD = 375 + 2 * 375 + 32 * 8
TX_BASE = 21_000


def calldata_gas(data: bytes) -> int:
    """Intrinsic gas of calldata: 16 a non-zero byte, 4 a zero byte."""
    return sum(16 if b else 4 for b in data)


class Run:
    """A deployment with meters whose next readings we sign."""

    def __init__(self, billing: Billing, count: int, start: int) -> None:
        self.billing = billing
        self.meters = [Account.create() for _ in range(count)]
        self.state = {m.address: (0, start, 1_000, 0) for m in self.meters}
        self.spans: list[tuple[int, int]] = []
        for i in range(0, count, 100):
            billing.register_meters([(m.address, b"\x01" * 32, "north", 1_000)
                                     for m in self.meters[i:i + 100]], opened_at=start)

    def signed(self, selected: list[Any], at: int, import_wh: int, export_wh: int) -> list[tuple[ReadingData, str]]:
        out = []
        self.spans = []
        for m in selected:
            seq, ts, wh, ex = self.state[m.address]
            self.spans.append((ts, at))
            r = ReadingData(m.address, seq + 1, at, wh + import_wh, ex + export_wh)
            self.state[m.address] = (r.seq, r.timestamp, r.energy_wh, r.export_wh)
            out.append((r, sign_reading(m.key, self.billing.deployment.domain, r)))
        return out

    def submit(self, signed: list[tuple[ReadingData, str]]) -> tuple[int, int, bytes]:
        """Send one batch; (gas used, readings recorded, the packed batch)."""
        batch = b"".join(pack_reading(d, s) for d, s in signed)
        call = self.billing.contract.functions.submitReadings(batch)
        receipt = self.billing.client.transact(self.billing.settings.gateway_key, call,
                                               gas=gas_limit_for(len(signed), extra_periods(self.spans)))
        return int(receipt["gasUsed"]), len(self.billing.events("ReadingRecorded", receipt)), batch


def advance(client: ChainClient, seconds: int) -> None:
    """Move the (own, temporary) chain's clock forward."""
    client.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    client.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def demand_response(client: ChainClient, deployment: Any, run: Run) -> dict[str, int]:
    """Gas of a meter's signed opt-out and its withdrawal, of changing an event of 100 listed meters, and of
    crediting those 100 meters of a completed event in one transaction."""
    dr = DemandResponse(client, deployment)
    domain = deployment.demand_response_domain
    meters = run.meters[:100]
    start = (dr.billing.now() + 2 * PERIOD_SECONDS) // PERIOD_SECONDS * PERIOD_SECONDS
    terms = Terms(start, PERIOD_SECONDS * 2, 0, Signal.LEVEL, 2, 100_000)
    listed = dr.create_event("gas", terms, meters=[m.address for m in meters])
    modified = dr.modify_event(listed, terms)
    other = dr.create_event("gas", terms, meters=[meters[0].address])
    key = bytes(meters[0].key)
    opt_out = dr.opt_out(other, meters[0].address, 0, sign_optout(key, domain, other, 0, terms))
    withdrawn = dr.opt_out(other, meters[0].address, 0, sign_optout(key, domain, other, 0, terms, withdrawal=True),
                           withdrawal=True)
    advance(client, terms.end - dr.billing.now() + 5)
    credited = dr.credit(listed, [(m.address, 500, 100) for m in meters])
    return {"opt_out": int(opt_out["gasUsed"]), "withdrawal": int(withdrawn["gasUsed"]),
            "modify_100": int(modified["gasUsed"]), "credit_100": int(credited["gasUsed"]), "meters": len(meters)}


SILENCE_DAYS = (1, 7, 30, 400)


def silences(client: ChainClient, billing: Billing) -> list[dict[str, Any]]:
    """Gas of one reading after each of ``SILENCE_DAYS`` of silence (time of use), and after 30 days of
    published day-ahead prices; ``gas`` is None where the reading could not be recorded."""
    skew = billing.settings.max_future_skew
    start = (billing.now() + skew) // PERIOD_SECONDS * PERIOD_SECONDS + PERIOD_SECONDS
    billing.set_tariff(replace(TIME_OF_USE, effective_from=start))
    day_ahead_from = start + (max(SILENCE_DAYS) + 2) * 86_400
    billing.set_tariff(replace(DAY_AHEAD, effective_from=day_ahead_from))
    for first in range(day_ahead_from, day_ahead_from + 30 * 86_400, 2 * 86_400):  # two days a publication
        billing.publish_day_ahead(first, [20_000 + 37 * (i % 50) for i in range(96)],
                                  [9_000 + 11 * i for i in range(96)])
    cases = [(f"time of use, {days} day{'s' if days > 1 else ''}", start + 2 * 86_400 + 600, days)
             for days in SILENCE_DAYS]
    cases.append(("day-ahead, published, 30 days", day_ahead_from + 600, 30))
    advance(client, day_ahead_from + 32 * 86_400 - billing.now())
    rows = []
    for name, first_read, days in cases:
        meter = Account.create()
        billing.register_meters([(meter.address, b"\x01" * 32, "north", 1_000)], opened_at=first_read - 1_000)
        at = first_read + days * 86_400 - 13
        readings = []
        for seq, (t, wh) in enumerate(((first_read, 1_200), (at, 1_200 + days * 9_000)), start=1):
            r = ReadingData(meter.address, seq, t, wh, days * seq * 100)
            readings.append((r, sign_reading(meter.key, billing.deployment.domain, r)))
        billing.submit_readings(readings[:1])
        call = billing.contract.functions.submitReadings(pack_reading(*readings[1]))
        limit = gas_limit_for(1, extra_periods([(first_read, at)]))
        try:
            receipt = billing.client.transact(billing.settings.gateway_key, call, gas=min(limit, 29_000_000))
            assert len(billing.events("ReadingRecorded", receipt)) == 1
            gas: int | None = int(receipt["gasUsed"])
        except Exception:  # noqa: BLE001 - the figure is "could not be recorded", whatever the node said
            gas = None
        rows.append({"case": name, "gas": gas, "gas_bound": limit})
    return rows


def measure(sizes: list[int]) -> dict[str, Any]:
    """Run every scenario on a fresh Ganache and return the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        chain = GanacheProcess(Path(tmp) / "db", log_path=Path(tmp) / "ganache.log").start()
        try:
            settings = load_settings(env_file=Path(tmp) / "no.env", chain_rpc_url=chain.rpc_url,
                                     chain_ws_url=chain.ws_url, deployments_dir=Path(tmp) / "dep",
                                     data_dir=Path(tmp) / "data")
            deployment, _ = deploy(settings, force=True)
            client = ChainClient(settings)
            billing = Billing(client, deployment)
            now = billing.now()
            run = Run(billing, max(sizes), now - 86_400)
            first = run.signed(run.meters, now - 3_600, 500, 0)
            for i in range(0, len(first), 20):  # every meter's first reading (a 23-hour span, 46 half hours each)
                run.spans = [(now - 86_400, now - 3_600)] * len(first[i:i + 20])
                run.submit(first[i:i + 20])
            billing.set_tariff(TIME_OF_USE)
            advance(client, 2 * PERIOD_SECONDS)
            period = billing.now() // PERIOD_SECONDS * PERIOD_SECONDS
            at = period + 5
            warm = run.signed(run.meters, at, 20, 7)  # every meter's last reading in this period, as live meters'
            for i in range(0, len(warm), 100):
                run.submit(warm[i:i + 100])
            rows = []
            for size in sizes:
                at += 60
                gas, recorded, batch = run.submit(run.signed(run.meters[:size], at, 20, 7))
                assert recorded == size, f"only {recorded} of {size} readings recorded"
                rows.append({"batch": size, "gas": gas, "gas_per_reading": gas // size,
                             "calldata_gas": calldata_gas(submit_readings_calldata([])[:4] + batch) // size})
            # Day-ahead prices, and readings that cross a period boundary.
            start = (billing.now() + settings.max_future_skew) // PERIOD_SECONDS * PERIOD_SECONDS + PERIOD_SECONDS
            billing.set_tariff(replace(DAY_AHEAD, effective_from=start))
            billing.publish_day_ahead(start, [20_000 + 100 * i for i in range(48)], [9_000] * 48)
            advance(client, start + PERIOD_SECONDS - billing.now() + 30)
            extra = []
            base = billing.now() // PERIOD_SECONDS * PERIOD_SECONDS
            run.submit(run.signed(run.meters[:100], base + 10, 20, 7))
            for name, t in (("day-ahead, within a period", base + 20), ("day-ahead, across a boundary", base + 1_830)):
                if t > billing.now():
                    advance(client, t - billing.now() + 5)
                gas, recorded, _ = run.submit(run.signed(run.meters[:100], t, 20, 7))
                assert recorded == 100
                extra.append({"case": name, "batch": 100, "gas": gas, "gas_per_reading": gas // 100})
            dr = demand_response(client, deployment, run)
            return {"time_of_use": rows, "other": extra, "demand_response": dr, "silence": silences(client, billing)}
        finally:
            chain.stop()


def main() -> int:
    """Print the gas table and the floor arithmetic."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,10,100", help="batch sizes (comma-separated)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = measure([int(s) for s in args.sizes.split(",")])
    print("Time-of-use (banded import and export, UK clock time), readings with import and export:")
    print(f"{'batch':>6} {'gas used':>11} {'gas/reading':>12}")
    for row in figures["time_of_use"]:
        print(f"{row['batch']:>6} {row['gas']:>11,} {row['gas_per_reading']:>12,}")
    last = figures["time_of_use"][-1]
    n = last["batch"]
    floor = {
        "calldata (104 bytes, measured)": last["calldata_gas"],
        "ecrecover (precompile + staticcall)": ECRECOVER,
        "state word: cold SLOAD + SSTORE": COLD_SLOAD + SSTORE_CHANGE,
        "event: LOG2 with one data word": LOG2_ONE_WORD,
        f"transaction base / {n}": TX_BASE // n,
    }
    print(f"\nFloor for one reading in a batch of {n}:")
    for what, gas in floor.items():
        print(f"  {what:<40} {gas:>7,}")
    total = sum(floor.values())
    print(f"  {'floor':<40} {total:>7,}")
    print(f"  {'measured':<40} {last['gas_per_reading']:>7,}")
    print(f"  {'the rest: hashing, checks, split, price':<40} {last['gas_per_reading'] - total:>7,}")
    print("\nOther cases (batch of 100):")
    for row in figures["other"]:
        print(f"  {row['case']:<40} {row['gas_per_reading']:>7,} gas/reading")
    print("\nOne reading after a silence (a batch of 1; the gateway's bound from common/batches.py):")
    for row in figures["silence"]:
        used = f"{row['gas']:>11,} gas" if row["gas"] is not None else "  not recordable"
        print(f"  {row['case']:<40} {used}   bound {row['gas_bound']:>12,}")
    dr = figures["demand_response"]
    print("\nDemand response:")
    print(f"  {'opt-out (signed by the meter, relayed)':<40} {dr['opt_out']:>9,} gas")
    print(f"  {'withdrawal of that opt-out (signed)':<40} {dr['withdrawal']:>9,} gas")
    print(f"  {'change of an event of ' + str(dr['meters']) + ' listed meters':<40} {dr['modify_100']:>9,} gas")
    print(f"  {'credit ' + str(dr['meters']) + ' meters in one transaction':<40} {dr['credit_100']:>9,} gas "
          f"({dr['credit_100'] // dr['meters']:,} a meter)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
