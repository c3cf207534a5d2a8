#!/usr/bin/env python3
"""A bounded chaos run on loopback: 12 meters x 300 readings while the gateway is killed three
times, the chain restarted once and meter connections dropped; prints what was lost or
duplicated (must be 0) and exits non-zero otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.logs import setup_logging  # noqa: E402
from scripts.harness.chaos import ChaosConfig, run_chaos  # noqa: E402


def main() -> int:
    """Parse arguments, run, print the report."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--meters", type=int, default=12)
    p.add_argument("--readings", type=int, default=300, help="readings per meter")
    p.add_argument("--gateway-kills", type=int, default=3)
    p.add_argument("--chain-restarts", type=int, default=1)
    p.add_argument("--meter-drops", type=int, default=6)
    p.add_argument("--time-scale", type=float, default=30.0, help="15 s intervals divided by this")
    p.add_argument("--quick", action="store_true", help="3 meters, 40 readings, one fault of each kind")
    args = p.parse_args()
    setup_logging("WARNING")
    config = ChaosConfig(3, 40, 1, 1, 1) if args.quick else ChaosConfig(
        args.meters, args.readings, args.gateway_kills, args.chain_restarts, args.meter_drops, args.time_scale)
    report = run_chaos(config)
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
