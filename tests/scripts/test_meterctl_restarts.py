"""``meterctl exchange`` and ``meterctl reset-register`` (operations.control behind scripts/meterctl.py) against
the session's Ganache: what each puts on chain, the customer record that follows the new meter, the meter list,
the statement across a restart, and the refusals."""

# ruff: noqa: F811 - the meterctl tests' fixtures are imported, and test arguments shadow them

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount

from common.settings import Settings
from common.statement_render import to_csv
from operations.control import Operations, render_restart
from tests.scripts.test_meterctl import (
    HOUSEHOLD,
    advance_past,
    customers,
    household,  # noqa: F401 - the fixture
    meterctl,
    open_period,
    ops,  # noqa: F401 - the fixture
    read,
    settings,  # noqa: F401 - the fixture
)


def test_exchange_moves_the_account_the_open_bill_and_the_customer_record_to_the_new_meter(
    ops: Operations, settings: Settings, household: LocalAccount
) -> None:
    read(ops, household, (60, 300), (60, 200))
    old = ops.billing.meter(household.address)
    before = open_period(ops, household.address)
    new: LocalAccount = Account.create()
    advance_past(ops, old.last_timestamp + 60)  # a final read is never ahead of the chain's clock
    done = ops.exchange(HOUSEHOLD, new.address, final_import_wh=old.last_energy_wh + 100,
                        final_at=old.last_timestamp + 60, opening_import_wh=7)
    assert (done.kind, done.meter.address, done.new_meter and done.new_meter.address) == (
        "exchange", household.address, new.address)
    assert (done.last_seq, done.final_import_wh, done.import_wh) == (2, old.last_energy_wh + 100, 7)
    assert done.period.period_id == before.period_id and done.period.energy_wh == before.energy_wh + 100
    assert done.period.energy_cost > before.energy_cost  # the final read's 100 Wh were priced
    text = render_restart(done, settings.tz)
    assert f"exchanged {HOUSEHOLD} ({household.address}) for {HOUSEHOLD} ({new.address})" in text
    assert "retired and can never submit again" in text and "its first seq is 1" in text

    # The customer record (name, API key) follows the new meter; the name now stands for it.
    record = customers(settings)[HOUSEHOLD]
    assert record["meter"] == new.address and record["name"] == "Ada Lovelace"
    assert ops.resolve(HOUSEHOLD).address == new.address
    assert ops.billing.meter(household.address).active is False
    rows = {r.meter.address: r for r in ops.meters()}
    assert rows[household.address].replaced_by == new.address and rows[new.address].active

    # The new meter's readings go on the same bill; the statement covers both meters and adds up.
    read(ops, new, (60, 50))
    assert open_period(ops, new.address).energy_wh == before.energy_wh + 150
    statement = ops.statement_document(HOUSEHOLD)
    assert [(r.seq, r.source) for r in statement.readings] == [(1, "meter"), (2, "meter"), (2, "exchange"),
                                                              (1, "meter")]
    assert statement.import_wh == before.energy_wh + 150 and len(statement.restarts) == 1
    assert "restart,exchange," in to_csv(statement)

    listing = meterctl(settings, "meters")
    assert listing.returncode == 0, listing.stderr
    assert f"retired: {new.address}" in listing.stdout
    again = meterctl(settings, "exchange", household.address, Account.create().address)
    assert again.returncode == 1
    assert "[meter_inactive]" in again.stderr and "retired for good" in again.stderr


def test_meterctl_reset_register_restarts_the_sequence_and_keeps_the_bill(
    ops: Operations, settings: Settings, household: LocalAccount
) -> None:
    read(ops, household, (60, 300))
    last = ops.billing.meter(household.address)
    advance_past(ops, last.last_timestamp)
    before = open_period(ops, household.address)
    refused = meterctl(settings, "reset-register", HOUSEHOLD, "--final-import-wh", str(last.last_energy_wh - 1))
    assert refused.returncode == 1
    assert "[invalid_request]" in refused.stderr and "refused: register_decreased" in refused.stderr

    done = meterctl(settings, "reset-register", HOUSEHOLD)  # the last reading is the final read; registers to 0
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"reset the register of {HOUSEHOLD} ({household.address}): open period 1 goes on")
    assert "import 0 Wh, export 0 Wh from then on; its next seq is 1" in done.stdout
    view = ops.billing.meter(household.address)
    assert (view.last_seq, view.last_timestamp, view.last_energy_wh) == (0, last.last_timestamp, 0)
    assert open_period(ops, household.address) == before

    read(ops, household, (60, 40))  # seq 1 again, from 0 Wh
    assert open_period(ops, household.address).energy_wh == before.energy_wh + 40
    statement = ops.statement_document(HOUSEHOLD)
    assert [(r.seq, r.import_register_wh) for r in statement.readings] == [(1, last.last_energy_wh), (1, 40)]
    assert statement.closing_import_wh == 40 and statement.import_wh == before.energy_wh + 40


def test_exchange_to_a_registered_address_is_refused_in_a_plain_sentence(
    ops: Operations, settings: Settings, household: LocalAccount
) -> None:
    other = Account.create().address
    ops.billing.register_meter(other, b"\x42" * 32, "north", 0, 0)
    result = meterctl(settings, "exchange", HOUSEHOLD, other)
    assert result.returncode == 1
    assert f"{other} is already registered on chain; an exchange needs a new meter" in result.stderr
    assert ops.billing.meter(household.address).active is True
