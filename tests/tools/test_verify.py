"""The independent bill check (tools/verify/check.mjs, JavaScript) against a real Ganache of its own: a fleet
with a day's history (two exporting households), issued bills, a time-of-use tariff change with day-ahead
export prices and a gap; then the same chain seen through a node that lies about one event, where it must
fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak

from common.billing import Billing
from common.chain import ChainClient
from common.deployment import Deployment
from common.eip712 import ReadingData, sign_reading
from common.settings import ROOT, Settings
from common.tariff import CLOCK_LOCAL, PriceRule, TariffVersion
from meters.identity import MeterIdentity, list_meters, meter_dir
from operations.provisioning import provision
from tests.support import deployed_on_own_chain

CHECK = ROOT / "tools" / "verify" / "check.mjs"
HOUR = 3_600
TARIFF_CHANGED = "0x" + keccak(text="TariffChanged(uint32,uint64,uint32,uint8,uint8,uint32,uint256,uint256,uint8,"
                                    "uint32,uint256,uint256)").hex()
BILL_ISSUED = "0x" + keccak(text="BillIssued(address,uint32,uint64,uint64,uint64,uint64,uint64,uint64,uint64,"
                                 "int256)").hex()


@dataclass
class Fleet:
    """The chain the verifier checks: who is on it and what the contract says of their bills."""

    settings: Settings
    deployment: Deployment
    billing: Billing
    meters: dict[str, str]  # name -> address
    bills: dict[str, int]  # name -> bills issued


def sign_and_submit(billing: Billing, settings: Settings, name: str, rows: list[tuple[int, int, int]]) -> None:
    """Put a provisioned meter's readings on chain, signed with its key: (time, import Wh, export Wh) rows."""
    directory = meter_dir(settings.data_dir, name)
    identity = MeterIdentity.load(directory)
    view = billing.meter(identity.address)
    signed = []
    for i, (ts, wh, export) in enumerate(rows, start=view.last_seq + 1):
        data = ReadingData(identity.address, i, ts, wh, export)
        signed.append((data, sign_reading(identity.key(directory), billing.deployment.domain, data)))
    assert len(billing.events("ReadingRecorded", billing.submit_readings(signed))) == len(rows)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings) -> Iterator[Fleet]:
    """Five provisioned meters with a day of history on a Ganache of their own (time travels here)."""
    with deployed_on_own_chain(tmp_path_factory.mktemp("verify"), base_settings) as (settings, deployment):
        provision(settings, count=5, history_days=1)
        billing = Billing(ChainClient(settings), deployment)
        names = list_meters(settings.data_dir)
        meters = {n: MeterIdentity.load(meter_dir(settings.data_dir, n)).address for n in names}
        for name in ("meter-01", "meter-02"):
            billing.close_billing_period(meters[name])
        # A time-of-use tariff from the next half hour allowed: banded import in UK clock time, day-ahead export.
        now = billing.now()
        change = (now + settings.max_future_skew) // 1_800 * 1_800 + 1_800
        bands = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]
        billing.set_tariff(TariffVersion(change, 61_111, PriceRule.banded(bands, [8_500, 31_234, 35_000]),
                                         PriceRule.day_ahead(4_100), CLOCK_LOCAL))
        billing.publish_day_ahead(change, [], [5_000 + 250 * i for i in range(4)])  # then the fallback
        billing.set_tariff(TariffVersion.flat(30_000, 60_000, change + 30 * HOUR, 15_000))  # not yet in force
        billing.client.w3.provider.make_request("evm_increaseTime", [change + 6 * HOUR - now])  # type: ignore[arg-type]
        billing.client.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        for name in names:
            if name == "meter-03":
                continue  # history only: its open period is priced by the first tariff alone
            view = billing.meter(meters[name])
            solar = name in ("meter-02", "meter-05")
            # Half-hourly from the end of the history across the change; meter-04 after a gap over it.
            first = view.last_timestamp + 1_800 if name != "meter-04" else change + HOUR
            rows = [(first + i * 1_800, view.last_energy_wh + 400 * (i + 1),
                     view.last_export_wh + (150 * (i + 1) if solar else 0)) for i in range(8)]
            sign_and_submit(billing, settings, name, rows)
        billing.close_billing_period(meters["meter-01"])  # its second bill spans the change
        yield Fleet(settings, deployment, billing, meters, {"meter-01": 2, "meter-02": 1})


def check(rpc: str, deployment: Deployment, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the verifier as a customer would."""
    node = shutil.which("node")
    assert node is not None, "Node.js is required (scripts/bootstrap.sh checks for it)"
    path = settings.deployments_dir / f"{deployment.chain_id}.json"
    return subprocess.run([node, str(CHECK), "--rpc", rpc, "--deployment", str(path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_verifier_agrees_with_every_bill_on_a_chain_with_history_export_a_tariff_change_and_issued_bills(
        fleet: Fleet) -> None:
    result = check(fleet.settings.chain_rpc_url, fleet.deployment, fleet.settings, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    rows = {r["meter"]: r for r in report["rows"]}
    assert set(rows) == set(fleet.meters.values()) and report["agrees"] is True
    for name, address in fleet.meters.items():
        row, bill = rows[address], fleet.billing.bill(address)
        assert row["agrees"] and row["problems"] == []
        assert row["bills"] == fleet.bills.get(name, 0)
        assert row["readings"] == fleet.billing.meter(address).last_seq
        assert (int(row["open"]["amountDue"]), int(row["open"]["importWh"]), int(row["open"]["exportWh"])) == (
            bill.amount_due, bill.period_energy_wh, bill.period_export_wh)
    assert int(rows[fleet.meters["meter-02"]]["open"]["exportCredit"]) > 0  # an exporting household
    assert report["summary"].endswith("all agree with the contract")

    # A customer checks their own meter: one row, in words.
    mine = check(fleet.settings.chain_rpc_url, fleet.deployment, fleet.settings, "--meter", fleet.meters["meter-02"])
    assert mine.returncode == 0, mine.stdout + mine.stderr
    lines = mine.stdout.splitlines()
    assert lines[0].split()[:3] == ["Meter", "Readings", "Bills"]
    assert lines[1].startswith(fleet.meters["meter-02"]) and lines[1].endswith("agrees") and len(lines) == 3
    assert lines[2].startswith("1 meters, ") and lines[2].endswith(": all agree with the contract")


def test_the_verifier_says_plainly_when_it_cannot_check(fleet: Fleet, tmp_path: Path) -> None:
    stranger = "0x" + "12" * 20
    unknown = check(fleet.settings.chain_rpc_url, fleet.deployment, fleet.settings, "--meter", stranger)
    assert unknown.returncode == 2 and f"meter {stranger} is not registered" in unknown.stderr
    down = check("http://127.0.0.1:9", fleet.deployment, fleet.settings)
    assert down.returncode == 2 and "no JSON-RPC node answers at http://127.0.0.1:9" in down.stderr
    elsewhere = replace(fleet.settings, deployments_dir=tmp_path)
    (tmp_path / f"{fleet.deployment.chain_id}.json").write_text(json.dumps(
        {**fleet.deployment.to_json(), "address": "0x" + "34" * 20}))
    missing = check(fleet.settings.chain_rpc_url, fleet.deployment, elsewhere)
    assert missing.returncode == 2 and "no contract at 0x3434" in missing.stderr


class LyingNode:
    """A JSON-RPC proxy in front of the chain that rewrites the logs it returns (a node, or a copy of the
    chain, that makes one bill wrong), so the verifier's answer can be checked against a known lie."""

    def __init__(self, upstream: str, rewrite: Callable[[dict[str, Any]], None]) -> None:
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                forwarded = urllib.request.Request(upstream, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(forwarded, timeout=60) as answer:  # noqa: S310 - loopback only
                    reply = json.loads(answer.read())
                if isinstance(request, dict) and request.get("method") == "eth_getLogs":
                    for log in reply.get("result", []):
                        node.rewrite(log)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.rewrite = rewrite
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LyingNode:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def add_to_word(log: dict[str, Any], word: int, amount: int) -> None:
    """Add ``amount`` to one 32-byte word of a log's data."""
    data = bytearray.fromhex(log["data"][2:])
    value = int.from_bytes(data[32 * word: 32 * word + 32], "big") + amount
    data[32 * word: 32 * word + 32] = value.to_bytes(32, "big")
    log["data"] = "0x" + data.hex()


def test_the_verifier_fails_when_a_tariff_event_is_decoded_with_a_wrong_rate(fleet: Fleet) -> None:
    def wrong_rate(log: dict[str, Any]) -> None:
        if log["topics"][0] == TARIFF_CHANGED and int(log["topics"][1], 16) == 2:
            add_to_word(log, 6, 1 | 1 << 32 | 1 << 64)  # importBandRates: each band a millipence dearer per kWh

    with LyingNode(fleet.settings.chain_rpc_url, wrong_rate) as node:
        result = check(node.url, fleet.deployment, fleet.settings)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    verdicts = {line.split()[0]: line.split()[-1] for line in lines[1:len(fleet.meters) + 1]}
    # Only meter-03 used no energy under version 2 (its readings are all before the change).
    assert verdicts == {a: ("agrees" if n == "meter-03" else "DISAGREES") for n, a in fleet.meters.items()}
    assert any("the event says the period's import charge is" in line for line in lines)
    assert lines[-1].endswith(f"{len(fleet.meters) - 1} of {len(fleet.meters)} meters DISAGREE with the contract")


def test_the_verifier_fails_when_an_issued_bill_says_a_micropence_more_than_its_readings_make(fleet: Fleet) -> None:
    target = fleet.meters["meter-02"]

    def dearer_bill(log: dict[str, Any]) -> None:
        if log["topics"][0] == BILL_ISSUED and log["topics"][1][-40:].lower() == target[2:].lower():
            add_to_word(log, 8, 1)  # amountDue

    with LyingNode(fleet.settings.chain_rpc_url, dearer_bill) as node:
        result = check(node.url, fleet.deployment, fleet.settings, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    wrong = [r for r in report["rows"] if not r["agrees"]]
    assert [r["meter"] for r in wrong] == [target]
    assert len(wrong[0]["problems"]) == 1 and "issued bill of period 1" in wrong[0]["problems"][0]
    assert "amount due: the contract says" in wrong[0]["problems"][0]
