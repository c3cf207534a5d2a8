"""The event decoder reads every contract event exactly as web3's own ABI decoding does."""

from __future__ import annotations

import time

from eth_account import Account

from common.billing import Billing
from common.eip712 import ReadingData, sign_reading
from common.events import EventDecoder


def test_every_event_decodes_as_web3_decodes_it(chain, deployment, snapshot):
    billing = Billing(chain, deployment)
    decoder = EventDecoder(deployment.abi)
    meter = Account.create()
    receipts = [billing.register_meter(meter.address, b"\x07" * 32, "north", 5_000, int(time.time()) - 3_600)]
    good = ReadingData(meter.address, 1, int(time.time()) - 60, 5_400)
    bad = ReadingData(meter.address, 2, int(time.time()) - 30, 4_000)  # the register went down: rejected
    receipts.append(billing.submit_readings([(r, sign_reading(meter.key, deployment.domain, r)) for r in (good, bad)]))
    receipts.append(billing.set_tariff(30_000, 60_000))
    receipts.append(billing.close_billing_period(meter.address))
    receipts.append(billing.deactivate_meter(meter.address))
    receipts.append(billing.reactivate_meter(meter.address))
    alert = billing.raise_grid_alert(2, "frequency_dip", "", "Ünïcode & <b>text</b>", int(time.time()) + 600)
    receipts.append(alert)
    receipts.append(billing.clear_grid_alert(billing.events("GridAlert", alert)[0]["args"]["id"]))
    seen = set()
    for receipt in receipts:
        for raw in receipt["logs"]:
            ours = decoder.decode(raw)
            assert ours is not None
            theirs = getattr(billing.contract.events, ours.name)().process_log(raw)
            assert ours.args == dict(theirs["args"]), ours.name
            assert (ours.block, ours.log_index) == (raw["blockNumber"], raw["logIndex"])
            assert ours.tx_hash == "0x" + bytes(raw["transactionHash"]).hex()
            seen.add(ours.name)
    assert seen == {e["name"] for e in deployment.abi if e.get("type") == "event"} - {
        "RoleGranted", "RoleRevoked", "RoleAdminChanged", "EIP712DomainChanged"}


def test_unknown_and_truncated_logs_decode_to_none(deployment):
    decoder = EventDecoder(deployment.abi)
    empty = {"topics": [], "data": "0x", "blockNumber": 1, "logIndex": 0, "transactionHash": "0x00"}
    assert decoder.decode(empty) is None
    topic = decoder.topic("BillUpdated")
    short = {"topics": [topic, "0x" + "00" * 32], "data": "0x" + "00" * 40, "blockNumber": "0x1", "logIndex": "0x0",
             "transactionHash": "0x" + "00" * 32}
    assert decoder.decode(short) is None
