"""``python -m meters NAME``: run one provisioned meter until Ctrl-C.

Shows a live panel on a terminal (or one structured log line per event when output is not a
terminal), takes readings at random intervals, signs and delivers them, and shows the live
bill, connection state, problems in plain words and grid alerts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

from common.deployment import load_deployment
from common.errors import SmartMeterError
from common.logs import log_event, setup_logging
from common.settings import load_settings, split_urls
from common.tls import client_context
from meters.client import MeterClient
from meters.csv_source import CsvSource
from meters.identity import MeterIdentity, meter_dir
from meters.lock import MeterLock
from meters.outbox import Outbox
from meters.schedule import IntervalSchedule
from meters.sources import CsvReplaySource, ModelSource, RegisterSource
from meters.status import MeterStatus

log = logging.getLogger("meter")
MULTIPLIER_STEP = 1.25


def _share(text: str) -> float:
    """A share between 0 and 1, for argparse."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m meters", description=__doc__)
    p.add_argument("name", help="the provisioned meter's name, e.g. meter-01")
    p.add_argument("--server", help="gateway URL, or several comma-separated to fail over between "
                   "(default SERVER_URLS, else wss://SERVER_HOST:SERVER_PORT)")
    p.add_argument("--ca", help="CA certificate to trust (default DATA_DIR/tls/ca.pem)")
    p.add_argument("--time-scale", type=float, help="divide waits between readings by this (TIME_SCALE)")
    p.add_argument("--min-interval", type=float, help="seconds between readings, at least (READING_MIN_INTERVAL)")
    p.add_argument("--max-interval", type=float, help="seconds between readings, at most (READING_MAX_INTERVAL)")
    p.add_argument("--multiplier", type=float, default=1.0, help="consumption factor (1.0 = the household model)")
    p.add_argument("--interactive", action="store_true",
                   help="+ and - raise or lower consumption while running; o opts out of the next demand-response "
                        "event, w withdraws that opt-out")
    p.add_argument("--opt-out-rate", type=_share,
                   help="share of demand-response events to opt out of, 0-1 (DR_OPT_OUT_RATE)")
    p.add_argument("--source", default="model", help="'model' or 'csv:PATH' to replay a sensor CSV (timestamp, kWh)")
    p.add_argument("--plain", action="store_true", help="log lines instead of the live panel, even on a terminal")
    p.add_argument("--quiet", action="store_true",
                   help="log lines go to meter.log only, not to stderr too (how run-clients.sh runs meters, so "
                        "their stderr holds only what is not a log line, such as a crash's traceback)")
    p.add_argument("--seed", type=int, help="seed for the reading intervals (default: random)")
    p.add_argument("--stop-after", type=int, help="take this many readings, wait until all are billed, then exit")
    return p.parse_args()


def _source(args: argparse.Namespace, identity: MeterIdentity, t: float, wh: int, export_wh: int) -> RegisterSource:
    if args.source == "model":
        return ModelSource(identity.household(args.multiplier), t, wh, export_wh)
    if args.source.startswith("csv:"):
        source = CsvReplaySource(CsvSource(args.source[4:]), t, wh)
        source.restart(t, wh, export_wh)
        return source
    raise SmartMeterError(f"--source must be 'model' or 'csv:PATH', not {args.source!r}")


def _interactive(loop: asyncio.AbstractEventLoop, client: MeterClient) -> None:
    """Read + and - from the terminal (cbreak mode) to change the consumption multiplier, o to opt out, w to
    withdraw an opt-out."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def on_key() -> None:
        ch = sys.stdin.read(1)
        if ch == "o":
            if client.opt_out() is None:
                client.status.note("no demand-response event to opt out of now (or not connected)")
            return
        if ch == "w":
            if client.withdraw_opt_out() is None:
                client.status.note("no opt-out to withdraw now (or not connected)")
            return
        model = getattr(client.source, "model", None)
        if model is None or ch not in "+-":
            return
        model.multiplier = model.multiplier * MULTIPLIER_STEP if ch == "+" else model.multiplier / MULTIPLIER_STEP
        client.status.multiplier = model.multiplier
        log_event(log, "multiplier_changed", meter=client.status.name, multiplier=round(model.multiplier, 3))

    loop.add_reader(fd, on_key)
    import atexit

    atexit.register(lambda: termios.tcsetattr(fd, termios.TCSADRAIN, old))


async def _main(args: argparse.Namespace) -> int:
    settings = load_settings()
    directory = meter_dir(settings.data_dir, args.name)
    identity = MeterIdentity.load(directory)
    deployment = load_deployment(settings)
    ca = args.ca or str(settings.ca_cert_path)
    outbox = Outbox(directory / "outbox.sqlite", identity.address)
    pos = outbox.position()
    now = time.time()
    source = _source(args, identity, pos.last_timestamp if pos else now, pos.last_energy_wh if pos else 0,
                     pos.last_export_wh if pos else 0)
    schedule = IntervalSchedule(
        args.min_interval or settings.reading_min_interval,
        args.max_interval or settings.reading_max_interval,
        args.time_scale or settings.time_scale,
        random.Random(args.seed),
    )
    status = MeterStatus(name=identity.name, meter=identity.address, region=identity.region,
                         archetype=identity.describe(), multiplier=args.multiplier)
    try:
        ssl_context = client_context(Path(ca))
    except FileNotFoundError:
        print(f"meter: the CA certificate {ca} does not exist; start the server once (./run-server.sh) "
              "so it creates data/tls/ca.pem", file=sys.stderr)
        return 1
    live_view = sys.stdout.isatty() and not args.plain
    client = MeterClient(
        key=identity.key(directory), domain=deployment.domain,
        url=split_urls(args.server or "") or settings.meter_server_urls,
        ssl_context=ssl_context, outbox=outbox, source=source, schedule=schedule, status=status,
        status_path=directory / "status.json", time_scale=args.time_scale or settings.time_scale,
        stop_after=args.stop_after,
        dr_domain=deployment.demand_response_domain if deployment.demand_response is not None else None,
        opt_out_rate=settings.dr_opt_out_rate if args.opt_out_rate is None else args.opt_out_rate,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().create_task(_stop_when(client.finished, stop))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.interactive and sys.stdin.isatty():
        _interactive(loop, client)
    log_event(log, "meter_started", meter=identity.name, address=identity.address, server=",".join(client.urls),
              last_seq=pos.last_seq if pos else 0)
    if live_view:
        from rich.live import Live

        from meters.display import render_meter

        with Live(render_meter(status), refresh_per_second=2, screen=False) as live:
            client.on_change = lambda s: live.update(render_meter(s))
            ticker = asyncio.create_task(_tick(live, client))
            await client.run(stop)
            ticker.cancel()
    else:
        await client.run(stop)
    outbox.close()
    return 0


async def _stop_when(finished: asyncio.Event, stop: asyncio.Event) -> None:
    await finished.wait()
    stop.set()


async def _tick(live: object, client: MeterClient) -> None:
    from meters.display import render_meter

    while True:
        await asyncio.sleep(1)
        live.update(render_meter(client.status))  # type: ignore[attr-defined]


def main() -> int:
    """Entry point."""
    args = _parse()
    settings = load_settings()
    directory = meter_dir(settings.data_dir, args.name)
    try:
        # First of all, before the log, the outbox or the status file is touched: a second process
        # for this meter must leave the first undisturbed.
        lock = MeterLock(directory, args.name).acquire()
    except SmartMeterError as err:
        print(f"meter {args.name}: cannot start [{err.code}]: {err.message}", file=sys.stderr)
        return 1
    to_terminal = sys.stdout.isatty() and not args.plain
    silent = to_terminal or args.quiet
    setup_logging(path=str(directory / "meter.log"), stream=open(os.devnull, "w") if silent else None)  # noqa: SIM115
    try:
        return asyncio.run(_main(args))
    except SmartMeterError as err:
        print(f"meter {args.name}: cannot start [{err.code}]: {err.message}", file=sys.stderr)
        return 1
    finally:
        lock.release()


if __name__ == "__main__":
    raise SystemExit(main())
