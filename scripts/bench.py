#!/usr/bin/env python3
"""Benchmark the system on loopback (its own Ganache and server): ingest through the gateway
beside the raw chain (optionally with several gateway worker processes, --workers), latency, gas
per reading, memory with idle connections. Prints tables and writes the figures as JSON (default
build/bench.json)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.logs import setup_logging  # noqa: E402
from scripts.harness.bench import BenchConfig, format_report, run_bench  # noqa: E402


def main() -> int:
    """Parse arguments, run, print, write JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fleets", default="12,100,1000", help="fleet sizes for the ingest benchmark")
    p.add_argument("--idle", default="1000", help="idle connection counts for the memory benchmark")
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--hardhat", default="100", help="fleet sizes to run against a Hardhat node ('' to skip)")
    p.add_argument("--anvil", default="", help="fleet sizes to run against Anvil with a block a second and two "
                                               "confirmations, timed to final bills (e.g. 100,1000; '' to skip)")
    p.add_argument("--workers", default="1",
                   help="gateway worker process counts (GATEWAY_WORKERS): every fleet's ingest runs once with each, "
                        "beside the raw chain (e.g. 1,2,4)")
    p.add_argument("--per-meter", type=int, default=0,
                   help="readings per meter in every ingest run (default: by fleet size and chain)")
    p.add_argument("--anvil-batch", type=int, default=100, help="the gateway's BATCH_MAX_SIZE on Anvil (1-250)")
    p.add_argument("--json", type=Path, default=Path("build/bench.json"))
    args = p.parse_args()
    setup_logging("WARNING")
    config = BenchConfig(fleets=tuple(int(x) for x in args.fleets.split(",") if x),
                         idle=tuple(int(x) for x in args.idle.split(",") if x), latency_seconds=args.latency_seconds,
                         hardhat_fleets=tuple(int(x) for x in args.hardhat.split(",") if x),
                         anvil_fleets=tuple(int(x) for x in args.anvil.split(",") if x),
                         workers=tuple(int(x) for x in args.workers.split(",") if x) or (1,),
                         per_meter=args.per_meter, anvil_batch=args.anvil_batch)
    results = asyncio.run(run_bench(config))
    print(format_report(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
