"""A first round trip against Ganache: register, submit a signed reading, read the bill."""

from __future__ import annotations

import time

from eth_account import Account

from common.billing import Billing
from common.eip712 import ReadingData, sign_reading
from common.tariff import MeterLedger, accrue, standing_charge


def test_signed_reading_is_recorded_and_billed(chain, deployment, snapshot):
    billing = Billing(chain, deployment)
    meter = Account.create()
    opened = int(time.time()) - 3600
    billing.register_meter(meter.address, b"\x01" * 32, "north", 1_000, opened)
    reading = ReadingData(meter.address, 1, opened + 1800, 1_500, 20)
    receipt = billing.submit_readings([(reading, sign_reading(meter.key, deployment.domain, reading))])
    recorded = billing.events("ReadingRecorded", receipt)
    assert [(e.args.seq, e.args.energyWh, e.args.exportWh) for e in recorded] == [(1, 1_500, 20)]
    schedule = billing.schedule()
    expected = accrue(MeterLedger(True, 0, opened, 1_000), 1, opened + 1800, 1_500, 20, schedule)
    bill = billing.bill(meter.address)
    assert bill.energy_cost == expected.period_import_cost
    assert bill.export_credit == expected.period_export_credit == 20 * billing.settings.tariff_export_rate
    assert bill.amount_due == (expected.period_import_cost + standing_charge(schedule.versions, opened, opened + 1800)
                               - expected.period_export_credit)
    assert (bill.period_energy_wh, bill.period_export_wh) == (500, 20)
    assert billing.meter(meter.address).region == "north"
