"""The parts of the cluster system test that run on a host of its network (``python -m tests.cluster.system_driver``),
with the settings in the environment (``Settings.as_env``).

``setup`` waits for the chain, deploys the contract, grants a second core's key the gateway role and registers
``--meters`` new meters (their keys go to ``--output``). ``meters`` runs those meters: each sends readings
1..``--count`` to its gateway, one after the previous one's ack, and on a dropped connection or a silent gateway
logs in at the next of ``--urls`` and carries on after the last seq the system used; it writes every ack's time and
the bills received. ``check`` waits until the chain holds every meter's readings and reports, per meter, the seqs
its ``ReadingRecorded`` events carry and its ``openBill`` and ``meterState``. ``leader`` names the NATS node that
leads the reading log's stream. Each writes one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from websockets.exceptions import ConnectionClosed

from common import errors
from common.billing import Billing
from common.chain import ChainClient
from common.deployer import deploy
from common.deployment import load_deployment
from common.devchain import rpc_answers
from common.eip712 import ReadingData
from common.events import unpack_record
from common.messages import Ack, Bill, ErrorMessage
from common.settings import Settings, load_settings
from common.tls import client_context
from meters.link import MeterLink
from server.bus.connection import connect
from server.bus.subjects import STREAM

#: Seconds a meter waits for an ack before it counts its gateway as gone.
ACK_TIMEOUT = 15.0
#: Seconds after the last ack a meter waits for the final bill of its last reading.
BILL_TIMEOUT = 120.0
#: Seconds one meter may keep failing to log in anywhere before it gives up.
LOGIN_GIVE_UP = 120.0


def setup(settings: Settings, meters: int, second_key: str, output: Path) -> None:
    """Deploy, grant ``second_key`` the gateway role and register ``meters`` meters; their keys to ``output``."""
    deadline = time.monotonic() + 180
    while not rpc_answers(settings.chain_rpc_url):
        if time.monotonic() > deadline:
            raise SystemExit(f"the chain at {settings.chain_rpc_url} never answered")
        time.sleep(0.5)
    deployment, _ = deploy(settings, force=True)
    client = ChainClient(settings)
    billing = Billing(client, deployment)
    role = billing.contract.functions.GATEWAY_ROLE().call()
    second = Account.from_key(second_key).address
    client.transact(settings.admin_key, billing.contract.functions.grantRole(role, second))
    accounts = [Account.create() for _ in range(meters)]
    billing.register_meters([(a.address, b"\x42" * 32, "north", 10_000) for a in accounts],
                            opened_at=int(time.time()) - 86_400)
    output.write_text(json.dumps({"keys": [a.key.hex() for a in accounts]}))


class Meter:
    """One meter streaming readings, failing over between gateways; what it was told, with times."""

    def __init__(self, key: str, urls: list[str], first: int, settings: Settings, start: int) -> None:
        self.key = key
        self.address = Account.from_key(key).address
        self.urls = urls
        self.turn = first
        self.settings = settings
        self.start = start
        self.context = client_context(settings.ca_cert_path)
        self.deployment = load_deployment(settings)
        self.acks: list[tuple[int, float]] = []
        self.bills: list[dict[str, Any]] = []
        self.failovers = 0
        self.link: MeterLink | None = None

    async def login(self) -> int:
        """Log in at the current gateway, or the next ones in turn; the last seq the system used."""
        gave_up = time.monotonic() + LOGIN_GIVE_UP
        while True:
            url = self.urls[self.turn % len(self.urls)]
            link = MeterLink(url, self.context, self.key, self.deployment.domain, open_timeout=5.0)
            try:
                welcome = await asyncio.wait_for(link.connect(), 15)
                self.link = link
                return max(welcome.last_used_seq or 0, welcome.last_seq)
            except (ConnectionClosed, OSError, asyncio.TimeoutError, errors.SmartMeterError):
                self.turn += 1
                if time.monotonic() > gave_up:
                    raise
                await asyncio.sleep(0.5)

    async def next_ack(self, seq: int) -> None:
        """Read messages until the ack of ``seq`` (bills on the way are kept)."""
        assert self.link is not None
        while True:
            message = await self.link.recv(timeout=ACK_TIMEOUT)
            if isinstance(message, Bill):
                self.bills.append(message.model_dump(mode="json"))
            elif isinstance(message, Ack) and message.seq == seq:
                if message.status not in ("queued", "duplicate"):
                    raise SystemExit(f"{self.address} seq {seq}: ack {message.status}")
                return
            elif isinstance(message, ErrorMessage):
                raise SystemExit(f"{self.address} seq {seq}: error {message.code} {message.message}")

    def last_final_bill(self) -> dict[str, Any] | None:
        """The newest final bill received."""
        finals = [b for b in self.bills if b.get("final") is not False]
        return max(finals, key=lambda b: b["seq"]) if finals else None

    async def run(self, count: int, interval: float) -> None:
        """Send readings up to ``count``, each acknowledged, then wait for the final bill of the last."""
        seq = await self.login() + 1
        while seq <= count:
            assert self.link is not None
            try:
                await self.link.send_reading(ReadingData(self.address, seq, self.start + seq * 10, 10_000 + seq * 10))
                await self.next_ack(seq)
                self.acks.append((seq, time.time()))
                seq += 1
                await asyncio.sleep(interval)
            except (ConnectionClosed, OSError, asyncio.TimeoutError):
                self.failovers += 1
                await self.link.close()
                self.turn += 1
                seq = await self.login() + 1
        deadline = time.monotonic() + BILL_TIMEOUT
        while (self.last_final_bill() or {}).get("seq", 0) < count and time.monotonic() < deadline:
            assert self.link is not None
            try:
                message = await self.link.recv(timeout=max(0.1, deadline - time.monotonic()))
                if isinstance(message, Bill):
                    self.bills.append(message.model_dump(mode="json"))
            except (ConnectionClosed, OSError, asyncio.TimeoutError):
                break
        assert self.link is not None
        await self.link.close()


async def run_meters(settings: Settings, keys: list[str], urls: list[str], count: int, interval: float,
                     progress: Path, output: Path) -> None:
    """Run every meter to ``count``; the least acked count so far to ``progress``, the results to ``output``."""
    start = int(time.time()) - 10 * count - 600
    meters = [Meter(key, urls, n, settings, start) for n, key in enumerate(keys)]
    runs = asyncio.gather(*(m.run(count, interval) for m in meters))
    while not runs.done():
        progress.write_text(str(min(len(m.acks) for m in meters)))
        await asyncio.wait([runs], timeout=0.25)
    runs.result()
    output.write_text(json.dumps({m.address: {"acks": m.acks, "failovers": m.failovers,
                                              "bill": m.last_final_bill()} for m in meters}))


def check(settings: Settings, addresses: list[str], count: int, output: Path) -> None:
    """Wait until every meter's last recorded seq is ``count`` (at most 180 s); its events and bill to ``output``."""
    deployment = load_deployment(settings)
    client = ChainClient(settings)
    contract = client.contract(deployment)
    deadline = time.monotonic() + 180
    while any(contract.functions.meterState(a).call()[4] < count for a in addresses):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(2.0)  # room for a wrong second submission to land
    result = {}
    for address in addresses:
        logs = contract.events.ReadingRecorded().get_logs(from_block=deployment.block,
                                                          argument_filters={"meter": address})
        result[address] = {"seqs": [unpack_record(int(e.args.record))["seq"] for e in logs],
                           "state": list(contract.functions.meterState(address).call()),
                           "bill": list(contract.functions.openBill(address).call())}
    output.write_text(json.dumps(result, default=lambda b: b.hex() if isinstance(b, bytes) else str(b)))


async def leader(settings: Settings, output: Path) -> None:
    """The server name of the reading log's stream leader to ``output``."""
    nc = await connect(settings, "cluster-test")
    try:
        info = await nc.jetstream().stream_info(STREAM)
    finally:
        await nc.close()
    output.write_text(json.dumps({"leader": info.cluster.leader if info.cluster is not None else None}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=("setup", "meters", "check", "leader"))
    parser.add_argument("--meters", type=int, default=30)
    parser.add_argument("--second-key", default="")
    parser.add_argument("--keys", type=Path)
    parser.add_argument("--urls", default="")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--progress", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    settings = load_settings()
    if args.command == "setup":
        setup(settings, args.meters, args.second_key, args.output)
        return
    if args.command == "leader":
        asyncio.run(leader(settings, args.output))
        return
    keys: list[str] = json.loads(args.keys.read_text())["keys"]
    if args.command == "meters":
        asyncio.run(run_meters(settings, keys, args.urls.split(","), args.count, args.interval, args.progress,
                               args.output))
    else:
        check(settings, [Account.from_key(k).address for k in keys], args.count, args.output)


if __name__ == "__main__":
    main()
