"""The event decoder reads every contract event exactly as web3's own ABI decoding does."""

from __future__ import annotations

import time

from eth_account import Account

from common.billing import Billing
from common.eip712 import ReadingData, sign_reading
from common.events import BatchOutcome, EventDecoder, unpack_record


def test_every_event_decodes_as_web3_decodes_it(chain, deployment, snapshot):
    billing = Billing(chain, deployment)
    decoder = EventDecoder(deployment.abi)
    meter = Account.create()
    receipts = [billing.register_meter(meter.address, b"\x07" * 32, "north", 5_000, int(time.time()) - 3_600)]
    good = ReadingData(meter.address, 1, int(time.time()) - 60, 5_400, 120)
    bad = ReadingData(meter.address, 2, int(time.time()) - 30, 4_000)  # the register went down: rejected
    receipts.append(billing.submit_readings([(r, sign_reading(meter.key, deployment.domain, r)) for r in (good, bad)]))
    receipts.append(billing.set_flat_tariff(30_000, 60_000))
    start = (billing.now() + 2 * 3_600) // 1_800 * 1_800
    receipts.append(billing.publish_day_ahead(start, [30_000, 31_000], [5_000, 5_100]))
    receipts.append(billing.client.transact(billing.settings.operator_key,
                                            billing.contract.functions.addClockChanges([(2_950_000_000, 60)])))
    receipts.append(billing.withdraw_clock_change(2_950_000_000))
    receipts.append(billing.set_flat_tariff(31_000, 60_000, start + 30 * 86_400))
    receipts.append(billing.withdraw_tariff(billing.contract.functions.tariffCount().call()))
    receipts.append(billing.close_billing_period(meter.address))
    receipts.append(billing.deactivate_meter(meter.address))
    receipts.append(billing.reactivate_meter(meter.address))
    receipts.append(billing.reset_register(meter.address, 5_400, 120, good.timestamp, 0, 0))
    receipts.append(billing.exchange_meter(meter.address, Account.create().address, 0, 0, good.timestamp, 7, 0))
    alert = billing.raise_grid_alert(2, "frequency_dip", "", "Ünïcode & <b>text</b>", int(time.time()) + 600)
    receipts.append(alert)
    receipts.append(billing.clear_grid_alert(billing.events("GridAlert", alert)[0]["args"]["id"]))
    seen = set()
    for receipt in receipts:
        for raw in receipt["logs"]:
            ours = decoder.decode(raw)
            assert ours is not None
            theirs = getattr(billing.contract.events, ours.name)().process_log(raw)
            theirs_args = dict(theirs["args"])
            if ours.name == "ReadingRecorded":  # ours also names the packed record's fields
                assert ours.args["exportWh"] == 120
                theirs_args.update(unpack_record(theirs_args["record"]))
            assert ours.args == theirs_args, ours.name
            assert (ours.block, ours.log_index) == (raw["blockNumber"], raw["logIndex"])
            assert ours.tx_hash == "0x" + bytes(raw["transactionHash"]).hex()
            seen.add(ours.name)
    assert seen == {e["name"] for e in deployment.abi if e.get("type") == "event"} - {
        "RoleGranted", "RoleRevoked", "RoleAdminChanged", "EIP712DomainChanged"}


def test_unknown_and_truncated_logs_decode_to_none(deployment):
    decoder = EventDecoder(deployment.abi)
    empty = {"topics": [], "data": "0x", "blockNumber": 1, "logIndex": 0, "transactionHash": "0x00"}
    assert decoder.decode(empty) is None
    topic = decoder.topic("BillIssued")
    short = {"topics": [topic, "0x" + "00" * 32], "data": "0x" + "00" * 40, "blockNumber": "0x1", "logIndex": "0x0",
             "transactionHash": "0x" + "00" * 32}
    assert decoder.decode(short) is None


def test_batch_outcomes_count_each_transactions_recorded_and_rejected_readings(chain, deployment):
    billing = Billing(chain, deployment)
    decoder = EventDecoder(deployment.abi)
    meters = [Account.create() for _ in range(3)]
    opened = int(time.time()) - 3_600
    registered = billing.register_meters([(m.address, b"\x07" * 32, "north", 5_000) for m in meters], opened)
    assert decoder.batch_outcomes(registered[-1]["logs"]) == {}  # no reading events: not a batch
    readings = [ReadingData(m.address, 1, int(time.time()) - 60, 5_100) for m in meters]
    readings.append(ReadingData(meters[0].address, 2, int(time.time()) - 30, 4_000))  # register went down: rejected
    receipt = billing.submit_readings([(r, sign_reading(m.key, deployment.domain, r))
                                       for r, m in zip(readings, [*meters, meters[0]], strict=True)])
    tx = "0x" + bytes(receipt["transactionHash"]).hex()
    logs = [dict(raw) for raw in receipt["logs"]]
    assert decoder.batch_outcomes(logs) == {tx: BatchOutcome(receipt["blockNumber"], 3, 1)}
