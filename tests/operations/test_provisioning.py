"""Provisioning: twelve meters registered, each with seven days of signed half-hourly history
on chain and a non-zero bill; re-running changes nothing; personal data stays off chain."""

from __future__ import annotations

import json

from common.billing import Billing
from common.chain import ChainClient
from meters.identity import MeterIdentity, list_meters, meter_dir
from meters.outbox import Outbox
from operations.provisioning import provision


def test_twelve_meters_start_with_a_week_of_history_and_a_bill(meter_settings, deployment):
    report = provision(meter_settings, count=12, history_days=7)
    assert len(report.created) == 12 and report.readings == 12 * 336
    billing = Billing(ChainClient(meter_settings), deployment)
    contract = billing.contract
    customers = json.loads((meter_settings.data_dir / "customers.json").read_text())["customers"]
    assert len(customers) == 12
    for name in list_meters(meter_settings.data_dir):
        directory = meter_dir(meter_settings.data_dir, name)
        identity = MeterIdentity.load(directory)
        events = contract.events.ReadingRecorded().get_logs(from_block=deployment.block,
                                                            argument_filters={"meter": identity.address})
        assert len(events) >= 336
        assert billing.bill(identity.address).amount_due > 0
        position = Outbox(directory / "outbox.sqlite", identity.address).position()
        assert position.last_seq == billing.meter(identity.address).last_seq == 336
        assert (directory / "key.hex").stat().st_mode & 0o777 == 0o600
        customer = next(c for c in customers if c["meter"] == identity.address)
        registered = contract.events.MeterRegistered().get_logs(from_block=deployment.block,
                                                               argument_filters={"meter": identity.address})[0]
        on_chain = json.dumps({k: str(v) for k, v in registered.args.items()})
        assert customer["name"] not in on_chain and customer["address"] not in on_chain
        assert "0x" + registered.args.accountRef.hex() == identity.account_ref

    again = provision(meter_settings, count=12, history_days=7)
    assert len(again.skipped) == 12 and again.readings == 0
