#!/usr/bin/env python3
"""Raise grid alerts through the chain with the grid operator's key: play a scenario file, then
keep raising random alerts (unless --once), clearing each alert when it expires.

Ctrl-C or SIGTERM clears every alert still active and exits 0; a second Ctrl-C quits at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.billing import Billing  # noqa: E402
from common.chain import ChainClient  # noqa: E402
from common.deployment import load_deployment  # noqa: E402
from common.errors import SmartMeterError  # noqa: E402
from common.logs import log_event, setup_logging  # noqa: E402
from common.settings import load_settings  # noqa: E402
from operations.grid_emitter import (  # noqa: E402
    ALL_REGIONS,
    ALL_REGIONS_LABEL,
    CHAIN_FAILURES,
    DEFAULT_MAX_INTERVAL_S,
    DEFAULT_MIN_INTERVAL_S,
    DEFAULT_REGIONS,
    Emitter,
    RandomAlerts,
    Scenario,
    check_ready,
    log,
)

PROG = "grid_alert_emitter"
#: Exit status after a second interrupt (128 + SIGINT), as shells report it.
EXIT_FORCED = 130


def parse_regions(text: str) -> tuple[str, ...]:
    """Split a comma-separated region list; an empty item or "all" means every region."""
    return tuple(ALL_REGIONS if item.strip().lower() in ("", ALL_REGIONS_LABEL) else item.strip()
                 for item in text.split(","))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read and check the command line (exit 2 with a usage message when it is wrong)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", type=Path, help="a scenario JSON file to play first")
    parser.add_argument("--once", action="store_true",
                        help="play the scenario, clear its alerts as they expire, then exit (no random alerts)")
    parser.add_argument("--random", action="store_true",
                        help="raise random alerts (the default; after the scenario when one is given)")
    parser.add_argument("--min-interval", type=float, default=DEFAULT_MIN_INTERVAL_S, metavar="S",
                        help="shortest wait between random alerts, seconds (default %(default)g)")
    parser.add_argument("--max-interval", type=float, default=DEFAULT_MAX_INTERVAL_S, metavar="S",
                        help="longest wait between random alerts, seconds (default %(default)g)")
    parser.add_argument("--regions", default=",".join(r or ALL_REGIONS_LABEL for r in DEFAULT_REGIONS),
                        help="comma-separated regions for random alerts; 'all' (or an empty item) means every "
                             "region (default %(default)s)")
    parser.add_argument("--seed", type=int, help="seed for the random alerts, to replay the same run")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    parser.add_argument("--log-file", help="also append the log lines to this file")
    args = parser.parse_args(argv)
    if args.once and args.scenario is None:
        parser.error("--once needs --scenario (there is nothing to play once)")
    if args.once and args.random:
        parser.error("--once and --random contradict each other: --once stops after the scenario")
    if not 0 < args.min_interval <= args.max_interval:
        parser.error("need 0 < --min-interval <= --max-interval")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be a positive number of seconds")
    args.regions = parse_regions(args.regions)
    return args


def main(argv: list[str] | None = None) -> int:
    """Connect, check the contract and key, run the emitter until done, stopped or the deadline."""
    args = parse_args(argv)
    setup_logging(path=args.log_file)
    try:
        settings = load_settings()
        scenario = Scenario.load(args.scenario) if args.scenario else None
        random_alerts = RandomAlerts(regions=args.regions, min_interval=args.min_interval,
                                     max_interval=args.max_interval, seed=args.seed)
        client = ChainClient(settings)
        client.check()
        billing = Billing(client, load_deployment(settings))
        check_ready(billing)
    except SmartMeterError as err:
        print(f"{PROG}: {err.message} [{err.code}]", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1

    emitter = Emitter(billing, random_alerts=random_alerts)
    received: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)
        emitter.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    until = time.time() + args.duration if args.duration else None
    log_event(log, "emitter_started", contract=billing.contract.address, scenario=args.scenario,
              mode="once" if args.once else "random", seed=args.seed,
              regions=",".join(r or ALL_REGIONS_LABEL for r in args.regions),
              min_interval=args.min_interval, max_interval=args.max_interval, duration=args.duration)
    if not args.once:
        try:
            adopted = emitter.adopt_unsettled()
        except CHAIN_FAILURES as err:
            adopted = 0
            log_event(log, "demand_response_adopt_failed", logging.WARNING, error=str(err)[:200])
        if adopted:
            log_event(log, "demand_response_adopted", events=adopted, note="settled once each has ended")
    try:
        reason = emitter.run(scenario, then_random=not args.once, until=until)
    except KeyboardInterrupt:
        log_event(log, "emitter_stopped", reason="forced", signal=",".join(received) or None,
                  left_active=len(emitter.active))
        return EXIT_FORCED
    log_event(log, "emitter_stopped", reason=reason.value, signal=",".join(received) or None,
              left_active=len(emitter.active))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
