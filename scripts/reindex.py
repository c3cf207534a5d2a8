#!/usr/bin/env python3
"""Rebuild the index (DATA_DIR/index/index.sqlite, or the PostgreSQL database at INDEX_URL) from the
chain: every table derived from contract events is emptied and replayed; hourly limits are kept.
Stop the server (every process using the index) first."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.deployment import load_deployment  # noqa: E402
from common.errors import SmartMeterError  # noqa: E402
from common.logs import setup_logging  # noqa: E402
from common.settings import load_settings  # noqa: E402
from server.app import open_index  # noqa: E402
from server.indexing.indexer import rebuild  # noqa: E402


def main() -> int:
    """Parse arguments, rebuild, print what was indexed and how long it took."""
    argparse.ArgumentParser(description=__doc__).parse_args()
    setup_logging()
    started = time.monotonic()
    try:
        settings = load_settings()
        deployment = load_deployment(settings)
        index = open_index(settings, deployment)
        try:
            events = asyncio.run(rebuild(settings, deployment, index))
            meters = len(index.meters())
        finally:
            index.close()
    except SmartMeterError as err:
        print(f"reindex: error [{err.code}]: {err.message}", file=sys.stderr)
        return 1
    print(f"rebuilt the index from the chain: {events} events, {meters} meters, "
          f"in {time.monotonic() - started:.1f} s ({index.location})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
