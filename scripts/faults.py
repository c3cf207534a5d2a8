#!/usr/bin/env python3
"""A real-network fault run on loopback: Anvil with a block a second, 12 meters x 300 readings, five
reorganisations of 1-3 blocks, two more each followed by dropping the batch sent again, one
reorganisation of 5 blocks (deeper than CONFIRMATIONS=3: final blocks replaced), three tenfold fee
spikes, three dropped pending transactions, a node restart from its state file and a gateway
SIGKILL; prints the faults by kind, readings sent, lost and duplicated (both must be 0) and whether
the index equals a fresh reindex, and exits non-zero otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.logs import setup_logging  # noqa: E402
from scripts.harness.chaos import ChaosReport  # noqa: E402
from scripts.harness.faults import FaultConfig, run_faults  # noqa: E402


def main() -> int:
    """Parse arguments, run, print the report."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--meters", type=int, default=12)
    p.add_argument("--readings", type=int, default=300, help="readings per meter")
    p.add_argument("--reorgs", type=int, default=5)
    p.add_argument("--fee-spikes", type=int, default=3)
    p.add_argument("--drops", type=int, default=3)
    p.add_argument("--resent-drops", type=int, default=2, help="reorganisations followed by dropping the batch "
                   "the gateway sends again")
    p.add_argument("--deep-reorgs", type=int, default=1, help="reorganisations two blocks deeper than CONFIRMATIONS")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="3 meters, 30 readings, fewer faults (the test suite's form)")
    args = p.parse_args()
    setup_logging("WARNING")
    config = (FaultConfig(meters=3, readings=30, reorgs=2, fee_spikes=1, drops=1, resent_drops=1, deep_reorgs=0,
                          seed=args.seed) if args.quick
              else FaultConfig(meters=args.meters, readings=args.readings, reorgs=args.reorgs,
                               fee_spikes=args.fee_spikes, drops=args.drops, resent_drops=args.resent_drops,
                               deep_reorgs=args.deep_reorgs, seed=args.seed))
    report = run_faults(config)
    print(ChaosReport(report.verdicts).table().split("\n\n")[0])
    print()
    print(report.summary())
    for note in report.notes:
        print(f"note: {note}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
