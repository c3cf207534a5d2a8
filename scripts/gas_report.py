#!/usr/bin/env python3
"""Print gas per reading for batches of 1, 10 and 100 readings, after each meter's first reading.

Runs against the chain in the settings (default: Ganache on 127.0.0.1:8545) using a fresh
deployment recorded in a temporary directory, so it never touches the demo's deployment.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402

from common.chain import ChainClient  # noqa: E402
from common.deployer import deploy  # noqa: E402
from common.eip712 import ReadingData, sign_reading  # noqa: E402
from common.settings import load_settings  # noqa: E402


def main() -> int:
    """Deploy, register meters, submit batches and print a gas table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,10,100", help="batch sizes (comma-separated)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(deployments_dir=Path(tmp))
        deployment, _ = deploy(settings, force=True)
    client = ChainClient(settings)
    contract = client.contract(deployment)
    meters = [Account.create() for _ in range(max(sizes))]
    start = int(time.time()) - 86_400
    for m in meters:
        client.transact(settings.operator_key, contract.functions.registerMeter(
            m.address, b"\x01" * 32, b"\x00" * 32, 1_000, start), wait=False)
    state = {m.address: (0, start, 1_000) for m in meters}

    def batch(selected: list[Any]) -> tuple[int, int]:
        readings, sigs = [], []
        for m in selected:
            seq, ts, wh = state[m.address]
            r = ReadingData(m.address, seq + 1, ts + 1_800, wh + 250)
            state[m.address] = (r.seq, r.timestamp, r.energy_wh)
            readings.append((r.meter, r.seq, r.timestamp, r.energy_wh))
            sigs.append(bytes.fromhex(sign_reading(m.key, deployment.domain, r)[2:]))
        receipt = client.transact(settings.gateway_key, contract.functions.submitReadings(readings, sigs))
        recorded = len(contract.events.ReadingRecorded().process_receipt(receipt))
        return int(receipt["gasUsed"]), recorded

    for i in range(0, len(meters), 100):  # every meter's first reading
        batch(meters[i:i + 100])
    rows = []
    print(f"{'batch':>6} {'gas used':>10} {'gas/reading':>12} {'recorded':>9}")
    for size in sizes:
        gas, recorded = batch(meters[:size])
        assert recorded == size, f"only {recorded} of {size} readings recorded"
        rows.append({"batch": size, "gas": gas, "gas_per_reading": gas // size})
        print(f"{size:>6} {gas:>10,} {gas // size:>12,} {recorded:>9}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
