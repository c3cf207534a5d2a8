#!/usr/bin/env python3
"""The operator's command line: list, register, deactivate, reactivate, exchange and reset meters, show or
set the tariff, close billing periods, print customer statements and let further gateway deployments submit
readings, straight against the chain.

METER is a meter's name (meter-03) or its 0x address; list them with: meterctl.py meters

A change is reported once its transaction is final (CONFIRMATIONS blocks on top, the setting the
server uses; a reorganisation that removed it has the same transaction mined again), or with
--no-wait once mined, as "sent, not yet final" with its hash.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.errors import SmartMeterError  # noqa: E402
from common.logs import setup_logging  # noqa: E402
from common.settings import load_settings  # noqa: E402
from common.statement_render import describe, filename, to_csv, to_pdf  # noqa: E402
from operations.control import (  # noqa: E402
    Operations,
    format_time,
    render_close,
    render_half_hours,
    render_meters,
    render_outcomes,
    render_registered,
    render_restart,
    render_statement,
    render_tariff_change,
    render_tariffs,
    statement_json,
)
from operations.tariffs import load_prices, load_version, parse_time  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterctl.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-wait", action="store_true",
                        help="report a change once its transaction is mined, not final (CONFIRMATIONS blocks on "
                             "top): prints 'sent, not yet final' with the transaction's hash (for scripts)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("meters", help="list every meter registered on chain")

    register = commands.add_parser(
        "register", help="add meters: --count N simulated ones, or one external meter by --address")
    register.add_argument("--count", type=int, help="how many new simulated meters to provision")
    register.add_argument("--address", help="an external meter's 0x address (its key stays with the meter)")
    register.add_argument("--region", help="the external meter's grid region, e.g. north")
    register.add_argument("--name", help="the external meter's name (default ext-<address prefix>)")
    register.add_argument("--customer-name", default="", help="the account holder's name")
    register.add_argument("--customer-address", default="", help="the account holder's postal address")
    register.add_argument("--email", default="", help="the account holder's e-mail address")
    register.add_argument("--opening-wh", type=int, default=0, help="the meter's register at installation, in Wh")

    for name, text in [("deactivate", "reject a meter's readings until it is reactivated"),
                       ("reactivate", "accept a deactivated meter's readings again")]:
        commands.add_parser(name, help=text).add_argument("meter", metavar="METER")

    exchange = commands.add_parser(
        "exchange", help="replace a meter: a new meter address takes over its account and open bill after its final "
                         "read, and the old meter is retired")
    exchange.add_argument("meter", metavar="METER")
    exchange.add_argument("new_address", metavar="NEW_ADDRESS", help="the new meter's 0x address")
    exchange.add_argument("--opening-import-wh", type=int, default=0, help="the new meter's import register (Wh)")
    exchange.add_argument("--opening-export-wh", type=int, default=0, help="the new meter's export register (Wh)")
    reset = commands.add_parser(
        "reset-register", help="restart a meter's register and sequence after its final read (a rollover, a used-up "
                               "sequence, a re-key); its open bill goes on")
    reset.add_argument("meter", metavar="METER")
    reset.add_argument("--import-wh", type=int, default=0, help="the import register from then on (default 0)")
    reset.add_argument("--export-wh", type=int, default=0, help="the export register from then on (default 0)")
    for restart in (exchange, reset):
        restart.add_argument("--final-import-wh", type=int, help="the import register at the final read (Wh; default: "
                                                                 "the last reading's)")
        restart.add_argument("--final-export-wh", type=int, help="the export register at the final read (Wh; default: "
                                                                 "the last reading's)")
        restart.add_argument("--final-at", help="when the final read was taken (local time, e.g. '2026-12-05 09:30'; "
                                                "default: the last reading when no register is given, else now)")

    gateway = commands.add_parser(
        "gateway", help="list the keys that may submit readings, or let another gateway deployment's key do so")
    gateway.add_argument("action", choices=["list", "add", "remove"], nargs="?", default="list")
    gateway.add_argument("address", nargs="?", help="the gateway key's 0x address (for add and remove)")

    tariff = commands.add_parser(
        "tariff", help="show the tariff in force, coming and past; add a flat (a rate not given is kept), banded "
                       "or day-ahead version; publish day-ahead prices")
    tariff.add_argument("--unit-rate", help="a flat tariff: unit rate in pence per kWh, e.g. 24.67 (default: keep it)")
    tariff.add_argument("--standing-charge", help="a flat tariff: standing charge in pence per day, e.g. 57.21 "
                                                  "(default: keep it)")
    tariff.add_argument("--export-rate", help="a flat tariff: export rate in pence per kWh, e.g. 15 (default: keep it)")
    tariff.add_argument("--file", type=Path, help="a tariff version in JSON: flat, banded or day-ahead import and "
                                                   "export (see operations/tariffs.py)")
    tariff.add_argument("--from", dest="effective_from",
                        help="when the new version starts (local time, e.g. '2026-12-05 00:00'; default: the next "
                             "half hour the contract allows)")
    tariff.add_argument("--prices", type=Path, help="publish day-ahead prices from a CSV (start,import,export) or "
                                                     "JSON file of half-hourly prices")
    tariff.add_argument("--withdraw", type=int, metavar="VERSION",
                        help="withdraw the newest version before it takes effect (first, if a new one is also given)")
    tariff.add_argument("--withdraw-clock-change", type=int, metavar="UNIX_SECONDS",
                        help="withdraw the last published UK clock change (its time, as `tariff` lists) before it "
                             "takes effect")

    close = commands.add_parser("close-period", help="close a meter's billing period and issue its bill")
    close.add_argument("meter", metavar="METER", nargs="?")
    close.add_argument("--all", action="store_true", help="close every meter's period")

    halfhours = commands.add_parser(
        "halfhours", help="a meter's day in settlement periods: import, export, band, prices, cost, actual or "
                          "estimated")
    halfhours.add_argument("meter", metavar="METER")
    halfhours.add_argument("--date", help="the local day, e.g. 2026-12-02 (default: today)")

    statement = commands.add_parser(
        "statement", help="a customer's statement: every period in text or JSON, or one period's PDF and CSV")
    statement.add_argument("meter", metavar="METER")
    statement.add_argument("--json", action="store_true", help="print JSON (Wh, micropence, ISO times)")
    statement.add_argument("--pdf", nargs="?", const="", metavar="FILE",
                           help="write the period's statement as PDF (default file: statement-<meter>-period-<n>.pdf)")
    statement.add_argument("--csv", nargs="?", const="", metavar="FILE",
                           help="write the period's statement as CSV (default file: statement-<meter>-period-<n>.csv)")
    statement.add_argument("--period", type=int, metavar="N",
                           help="the billing period for --pdf and --csv (default: the open one, provisional)")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse argument combinations argparse cannot express (exits with status 2)."""
    if args.command == "register":
        if (args.count is None) == (args.address is None):
            parser.error("register takes either --count N or --address 0x.. --region R")
        if args.address is not None and not args.region:
            parser.error("register --address needs --region (e.g. --region north)")
    if args.command == "tariff":
        rates = (args.unit_rate, args.standing_charge, args.export_rate)
        if args.file is not None and any(r is not None for r in rates):
            parser.error("give either rates (--unit-rate, --standing-charge, --export-rate) or --file, not both")
    if args.command == "statement":
        files = args.pdf is not None or args.csv is not None
        if args.period is not None and not files:
            parser.error("--period goes with --pdf or --csv (the text statement lists every period)")
        if files and args.json:
            parser.error("give either --json or --pdf/--csv, not both")
        if args.period is not None and args.period < 1:
            parser.error("--period is a billing period's number, 1 or more")
    if args.command == "gateway" and (args.action == "list") != (args.address is None):
        parser.error("gateway list takes no address; gateway add and remove take one")
    if args.command == "close-period" and (args.meter is None) == (not args.all):
        parser.error("close-period takes either a METER or --all")


def _run(ops: Operations, args: argparse.Namespace) -> None:
    tz = ops.settings.tz
    if args.command == "meters":
        print(render_meters(ops.meters(), tz))
    elif args.command == "register":
        if args.count is not None:
            registered = ops.register_simulated(args.count)
        else:
            registered = [ops.register_external(
                args.address, args.region, name=args.name, customer_name=args.customer_name,
                postal_address=args.customer_address, email=args.email, opening_wh=args.opening_wh)]
        print(render_registered(registered, str(ops.customers_path)))
    elif args.command == "gateway":
        if args.action != "list":
            address = ops.set_gateway(args.address, args.action == "add")
            print(f"{address} {'may now submit' if args.action == 'add' else 'may no longer submit'} readings "
                  f"to the contract at {ops.deployment.address} (admin key)")
        print("keys holding GATEWAY_ROLE: " + (", ".join(ops.gateways()) or "none"))
    elif args.command == "deactivate":
        print(f"deactivated {ops.deactivate(args.meter).label}: its readings are rejected until reactivated")
    elif args.command == "reactivate":
        print(f"reactivated {ops.reactivate(args.meter).label}: its readings are accepted again")
    elif args.command in ("exchange", "reset-register"):
        final = {"final_import_wh": args.final_import_wh, "final_export_wh": args.final_export_wh,
                 "final_at": parse_time(args.final_at, tz) if args.final_at else None}
        if args.command == "exchange":
            done = ops.exchange(args.meter, args.new_address, opening_import_wh=args.opening_import_wh,
                                opening_export_wh=args.opening_export_wh, **final)
        else:
            done = ops.reset_register(args.meter, import_wh=args.import_wh, export_wh=args.export_wh, **final)
        print(render_restart(done, tz))
    elif args.command == "tariff":
        start = parse_time(args.effective_from, tz) if args.effective_from else 0
        if args.withdraw is not None:
            withdrawn = ops.withdraw_tariff(args.withdraw)
            print(f"tariff version {withdrawn.version} withdrawn; it would have started "
                  f"{format_time(withdrawn.effective_from, tz)} (the next version added takes its number)")
            print()
        if args.withdraw_clock_change is not None:
            at, minutes = ops.withdraw_clock_change(args.withdraw_clock_change)
            print(f"clock change at {format_time(at, tz)} (to UTC{minutes / 60:+g}h) withdrawn")
            print()
        if any(r is not None for r in (args.unit_rate, args.standing_charge, args.export_rate)):
            before = ops.tariff()
            new = ops.set_tariff(args.unit_rate, args.standing_charge, args.export_rate, start)
            print(render_tariff_change(before, new, tz))
            print()
        elif args.file is not None:
            version, _ = load_version(args.file, tz)
            new = ops.set_tariff_version(replace(version, effective_from=start or version.effective_from))
            print(f"tariff version {new.version} added; it prices energy used from "
                  f"{format_time(new.effective_from, tz)} on (energy used before keeps the prices it had)")
            print()
        if args.prices is not None:
            first, imports, exports = load_prices(args.prices, tz)
            count = ops.publish_prices(first, imports, exports)
            print(f"published day-ahead prices for {count} half hours from {format_time(first, tz)}")
        print(render_tariffs(ops.tariff(), ops.tariff_history(), tz))
    elif args.command == "close-period":
        results = ops.close_all() if args.all else [ops.close_period(args.meter)]
        for result in results:
            print(render_close(result, tz))
    elif args.command == "halfhours":
        day = date.fromisoformat(args.date) if args.date else datetime.now(tz).date()
        meter, rows = ops.half_hours(args.meter, day)
        print(render_half_hours(meter, day, rows, tz))
    elif args.command == "statement" and (args.pdf is not None or args.csv is not None):
        document = ops.statement_document(args.meter, args.period)
        for wanted, extension, render in ((args.pdf, "pdf", to_pdf), (args.csv, "csv", to_csv)):
            if wanted is not None:
                path = Path(wanted or filename(document, extension))
                data = render(document)
                path.write_bytes(data if isinstance(data, bytes) else data.encode())
                print(f"wrote {path}: {describe(document)}")
    elif args.command == "statement":
        statement = ops.statement(args.meter)
        print(json.dumps(statement_json(statement, tz), indent=2) if args.json else render_statement(statement, tz))


def main() -> int:
    """Parse the command, run it against the chain, print the outcome or a one-line error."""
    parser = _parser()
    args = parser.parse_args()
    _check(parser, args)
    setup_logging("WARNING")
    try:
        ops = Operations(load_settings(), wait=not args.no_wait)
        _run(ops, args)
        outcomes = render_outcomes(ops.transactions)
        if outcomes:
            print(outcomes)
    except SmartMeterError as err:
        print(f"meterctl: error [{err.code}]: {err.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
