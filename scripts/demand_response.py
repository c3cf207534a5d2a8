#!/usr/bin/env python3
"""Demand response against the chain: list events, settle a completed one, verify every credit.

    demand_response.py events            every event: status, modification, target, opt-outs, credits
    demand_response.py settle EVENT      measure each targeted meter and credit it (operator key)
    demand_response.py show EVENT        each targeted meter: opted out, baseline, actual, credit, recomputed;
                                         exit 1 when a credit disagrees with the recomputation
    demand_response.py verify            recompute every credit from the chain alone; exit 1 on a mismatch
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.chain import ChainClient  # noqa: E402
from common.demand_response import DemandResponse  # noqa: E402
from common.deployment import load_deployment  # noqa: E402
from common.errors import SmartMeterError  # noqa: E402
from common.logs import setup_logging  # noqa: E402
from common.settings import load_settings  # noqa: E402
from operations.control import meter_names  # noqa: E402
from operations.demand_response import event_table, render_table, settle, verify  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the command, print its outcome; 0 ok, 1 a mismatch, 2 could not run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("events", help="every event with its status and credits")
    s = sub.add_parser("settle", help="credit a completed event's participating meters")
    s.add_argument("event", type=int)
    sub.add_parser("verify", help="recompute every credit from the chain and compare")
    show = sub.add_parser("show", help="one event's settlement, meter by meter, checked against the chain")
    show.add_argument("event", type=int)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        settings = load_settings()
        # A settlement is reported once its credits are final (CONFIRMATIONS deep), as meterctl's changes are.
        dr = DemandResponse(ChainClient(settings, until="final"), load_deployment(settings))
        if args.command == "events":
            book = dr.book()  # opt-outs of each event's current terms, from one read of the logs
            for i in dr.event_ids():
                ev = dr.event(i)
                credits = dr.credits(i)
                target = ", ".join(ev.regions) or f"{len(ev.meters)} meters"
                print(f"event {i} ({ev.programme}) modification {ev.modification}: {ev.status.name.lower()}, "
                      f"{ev.terms.start}+{ev.terms.duration}s, {target}; {len(book.events[i].opted_out)} opted out, "
                      f"{len(credits)} credited, {sum(c.amount for c in credits)} micropence")
            return 0
        if args.command == "settle":
            done = settle(dr, args.event)
            print(f"event {done.event_id}: {len(done.responses)} meters targeted, "
                  f"{sum(r.opted_out for r in done.responses)} opted out, {done.credited} credited, "
                  f"{done.total} micropence in all")
            for r in done.responses:
                m = r.measurement
                figures = "opted out" if r.opted_out else "no baseline" if m is None or m.baseline_wh is None \
                    else f"baseline {m.baseline_wh} Wh, actual {m.actual_wh} Wh"
                print(f"  {r.meter}: {figures}")
            return 0
        if args.command == "show":
            event, rows = event_table(dr, args.event)
            print(render_table(event, rows, meter_names(settings.data_dir)))
            return 1 if any(r.mismatch for r in rows) else 0
        mismatches, checked = verify(dr)
        for wrong in mismatches:
            print(f"MISMATCH {wrong}")
        print(f"{checked} credits checked against the chain: "
              f"{'all agree' if not mismatches else f'{len(mismatches)} disagree'}")
        return 1 if mismatches else 0
    except SmartMeterError as err:
        print(f"demand_response: error [{err.code}]: {err.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
