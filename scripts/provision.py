#!/usr/bin/env python3
"""Provision N meters (default 12): keys, customers, registration and 7 days of history on chain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.errors import SmartMeterError  # noqa: E402
from common.logs import setup_logging  # noqa: E402
from common.settings import load_settings  # noqa: E402
from operations.provisioning import provision  # noqa: E402


def main() -> int:
    """Parse arguments, provision, print a summary with the time it took."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, help="how many meters (METER_COUNT, default 12)")
    parser.add_argument("--history-days", type=int, help="days of half-hourly history (HISTORY_DAYS, default 7)")
    args = parser.parse_args()
    setup_logging()
    settings = load_settings()
    try:
        report = provision(settings, args.count or settings.meter_count, args.history_days)
    except SmartMeterError as err:
        print(f"error [{err.code}]: {err.message}", file=sys.stderr)
        return 1
    print(f"provisioned {len(report.created)} new and {len(report.reregistered)} re-registered meters "
          f"({len(report.skipped)} already on chain): {report.readings} history readings in {report.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
