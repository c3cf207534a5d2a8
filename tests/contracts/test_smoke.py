"""A first round trip against Ganache: register, submit a signed reading, read the bill."""

from __future__ import annotations

import time

from eth_account import Account

from common.billing import Billing
from common.eip712 import ReadingData, sign_reading
from common.tariff import MeterLedger, Tariff, accrue


def test_signed_reading_is_recorded_and_billed(chain, deployment, snapshot):
    billing = Billing(chain, deployment)
    meter = Account.create()
    opened = int(time.time()) - 3600
    billing.register_meter(meter.address, b"\x01" * 32, "north", 1_000, opened)
    reading = ReadingData(meter.address, 1, opened + 1800, 1_500)
    receipt = billing.submit_readings([(reading, sign_reading(meter.key, deployment.domain, reading))])
    recorded = billing.events("ReadingRecorded", receipt)
    assert [(e.args.seq, e.args.energyWh) for e in recorded] == [(1, 1_500)]
    tariff = billing.tariff()
    expected = accrue(MeterLedger(True, 0, opened, 1_000), 1, opened + 1800, 1_500,
                      Tariff(tariff.unit_rate, tariff.standing_charge))
    assert billing.bill(meter.address).amount_due == expected.amount_due
    assert billing.meter(meter.address).region == "north"
