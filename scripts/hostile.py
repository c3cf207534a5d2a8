#!/usr/bin/env python3
"""Send the hostile-input corpus to a gateway and print case, code, outcome.

By default starts its own Ganache, deployment and server on free loopback ports (nothing else
is touched); exits non-zero if any case gets an unexpected answer, an honest meter stops being
served, or anything hostile reaches the chain.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.billing import Billing  # noqa: E402
from common.chain import ChainClient  # noqa: E402
from common.deployer import deploy  # noqa: E402
from common.devchain import GanacheProcess, free_port  # noqa: E402
from common.logs import setup_logging  # noqa: E402
from common.settings import load_settings  # noqa: E402
from common.tls import client_context  # noqa: E402
from scripts.harness.hostile import CASES, format_table, run_corpus  # noqa: E402
from server.app import ServerApp  # noqa: E402


async def _run(base: Path) -> int:
    chain = GanacheProcess(base / "chain", log_path=base / "ganache.log").start()
    try:
        settings = load_settings(env_file=base / "none.env", chain_rpc_url=chain.rpc_url, chain_ws_url=chain.ws_url,
                                 deployments_dir=base / "deployments", data_dir=base / "data",
                                 server_port=free_port(), http_port=free_port(), auth_timeout=2.0,
                                 batch_max_wait=0.05)
        deployment, _ = deploy(settings, force=True)
        app = await ServerApp.start(settings, deployment)
        try:
            results, bills, leaked = await run_corpus(settings.server_url, client_context(settings.ca_cert_path),
                                                      deployment.domain, Billing(ChainClient(settings), deployment))
        finally:
            await app.stop()
    finally:
        chain.stop()
    print(format_table(results))
    bad = [r for r in results if not r.ok]
    print(f"\n{len(results)} cases, {len(results) - len(bad)} as expected, {len(bad)} unexpected; "
          f"honest meters' bills during the attack: {sorted(bills.values())}; hostile readings on chain: {len(leaked)}")
    for line in leaked:
        print("LEAKED:", line)
    return 1 if bad or leaked or min(bills.values()) < 1 else 0


def main() -> int:
    """Parse arguments and run the corpus."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args()
    if args.list:
        for case in CASES:
            print(f"{case.name}: {case.expected}")
        return 0
    setup_logging("ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_run(Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
