"""``python -m server``: run the gateway, batcher and relay until Ctrl-C.

Exits with 1 and one plain sentence (no traceback) when it cannot start, or when a part of it
ended unexpectedly and it stopped."""

from __future__ import annotations

import argparse
import asyncio
import sys

from common.errors import SmartMeterError
from common.logs import setup_logging
from common.settings import load_settings


def main() -> int:
    """Parse arguments, load settings, run the server."""
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--host", help="address to listen on (SERVER_HOST)")
    parser.add_argument("--port", type=int, help="meters' WebSocket port (SERVER_PORT)")
    parser.add_argument("--log-file", help="also write log lines to this file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    setup_logging(args.log_level, path=args.log_file)
    overrides = {k: v for k, v in {"server_host": args.host, "server_port": args.port}.items() if v is not None}
    try:
        settings = load_settings(**overrides)
        from server.app import run

        failure = asyncio.run(run(settings))
    except SmartMeterError as err:
        print(f"server: cannot start [{err.code}]: {err.message}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno == 98:
            print(f"server: port in use ({err}); stop the other server or set SERVER_PORT / HTTP_PORT", file=sys.stderr)
            return 1
        raise
    if failure is not None:
        print(f"server: stopped: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
