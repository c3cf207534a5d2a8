#!/usr/bin/env python3
"""Deploy SmartMeterBilling, or reuse the recorded deployment if its code is still on chain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.deployer import deploy, describe  # noqa: E402
from common.errors import SmartMeterError  # noqa: E402
from common.logs import setup_logging  # noqa: E402
from common.settings import load_settings  # noqa: E402


def main() -> int:
    """Parse arguments, deploy, print where the deployment is recorded."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="deploy a new contract even if one is recorded")
    args = parser.parse_args()
    setup_logging()
    try:
        settings = load_settings()
        deployment, fresh = deploy(settings, force=args.force)
    except SmartMeterError as err:
        print(f"error [{err.code}]: {err.message}", file=sys.stderr)
        return 1
    print(("deployed " if fresh else "reusing ") + describe(settings, deployment))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
