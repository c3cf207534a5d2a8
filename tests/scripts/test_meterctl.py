"""The operator's tool (operations.control behind scripts/meterctl.py) against the session's Ganache:
registering simulated and external meters, deactivating and reactivating, the tariff, closing
billing periods, statements, and the script's output and exit codes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from common.billing import Billing
from common.customers import Customer
from common.eip712 import ReadingData, sign_reading
from common.errors import ChainError, InvalidRequest, MeterInactive, NotFinal, UnknownMeter
from common.settings import GANACHE_DEV_KEYS, ROOT, Settings
from common.tariff import format_pounds
from operations.control import (
    BillPeriod,
    Operations,
    TariffVersion,
    format_kwh,
    format_pence,
    parse_pence,
    render_close,
    render_half_hours,
    render_statement,
    render_tariff_change,
    render_tariffs,
    statement_json,
)
from operations.tariffs import load_prices, load_version
from server.app import ServerApp
from tests.server.api.test_api_statements import issued_and_open, pdf_text

HOUSEHOLD = "heat-pump-1"


@pytest.fixture
def settings(base_settings: Settings, deployment: object, tmp_path: Path, snapshot: None) -> Settings:
    """The session's chain (reverted after the test) with a data directory of the test's own."""
    return base_settings.replace(data_dir=tmp_path / "data")


@pytest.fixture
def ops(settings: Settings) -> Operations:
    return Operations(settings)


@pytest.fixture
def household(ops: Operations) -> LocalAccount:
    """An external meter registered by name, whose key the test holds to sign its readings."""
    account: LocalAccount = Account.create()
    ops.register_external(account.address, "north", name=HOUSEHOLD, customer_name="Ada Lovelace",
                          postal_address="1 Analytical Row, London N1", email="ada@example.org",
                          opening_wh=5_000_000)
    return account


def read(ops: Operations, meter: LocalAccount, *steps: tuple[int, int]) -> None:
    """Put the meter's signed readings on chain, each (seconds after the previous one, Wh used since)."""
    view = ops.billing.meter(meter.address)
    seq, ts, wh = view.last_seq, view.last_timestamp, view.last_energy_wh
    signed = []
    for seconds, used in steps:
        seq, ts, wh = seq + 1, ts + seconds, wh + used
        data = ReadingData(meter.address, seq, ts, wh)
        signed.append((data, sign_reading(bytes(meter.key), ops.deployment.domain, data)))
    receipt = ops.billing.submit_readings(signed)
    assert len(ops.billing.events("ReadingRecorded", receipt)) == len(steps)


def open_period(ops: Operations, address: str) -> BillPeriod:
    """The contract's ``openBill`` view, field by field."""
    return BillPeriod(*(int(v) for v in ops.billing.contract.functions.openBill(address).call()))


def issued_on_chain(ops: Operations, address: str) -> list[BillPeriod]:
    """Every BillIssued event of the meter, through web3's own log decoding."""
    logs = ops.billing.contract.events.BillIssued().get_logs(from_block=ops.deployment.block,
                                                             argument_filters={"meter": address})
    return [BillPeriod(*(int(log.args[k]) for k in ("periodId", "periodStart", "periodEnd", "importWh", "exportWh",
                                                    "importCost", "exportCredit", "standingCharge", "amountDue")))
            for log in logs]


def customers(settings: Settings) -> dict[str, dict[str, str]]:
    path = settings.data_dir / "customers.json"
    return {c["meter_name"]: c for c in json.loads(path.read_text())["customers"]}


def meterctl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/meterctl.py", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **settings.as_env()}, timeout=60)


# ---------------------------------------------------------------- registering


def test_register_count_provisions_simulated_meters_after_the_existing_ones_without_history(
    ops: Operations, settings: Settings
) -> None:
    first = ops.register_simulated(2)
    more = ops.register_simulated(1)
    assert [m.meter.name for m in first] == ["meter-01", "meter-02"]
    assert [m.meter.name for m in more] == ["meter-03"]
    records = customers(settings)
    assert sorted(records) == ["meter-01", "meter-02", "meter-03"]
    assert (settings.data_dir / "customers.json").stat().st_mode & 0o777 == 0o600
    for m in first + more:
        record = records[m.meter.name or ""]
        assert record["meter"] == m.meter.address and len(record["api_key"]) >= 32
        on_chain = ops.billing.meter(m.meter.address)
        assert on_chain.registered and on_chain.active and on_chain.last_seq == 0
        assert on_chain.region == m.region == record["region"]
        assert on_chain.account_ref == m.account_ref == record["account_ref"]
        assert (settings.data_dir / "meters" / (m.meter.name or "") / "key.hex").exists()


def test_register_address_registers_an_external_meter_and_writes_its_customer_record(
    ops: Operations, settings: Settings, household: LocalAccount
) -> None:
    record = customers(settings)[HOUSEHOLD]
    assert set(record) == set(Customer.__dataclass_fields__)
    assert record["meter"] == household.address
    assert (record["name"], record["address"], record["email"]) == (
        "Ada Lovelace", "1 Analytical Row, London N1", "ada@example.org")
    assert len(record["api_key"]) >= 32 and record["region"] == "north"
    assert (settings.data_dir / "customers.json").stat().st_mode & 0o777 == 0o600
    assert not (settings.data_dir / "meters" / HOUSEHOLD).exists()
    on_chain = ops.billing.meter(household.address)
    assert on_chain.registered and on_chain.active and on_chain.region == "north"
    assert on_chain.account_ref == record["account_ref"] and on_chain.last_energy_wh == 5_000_000
    assert ops.resolve(HOUSEHOLD).address == ops.resolve(household.address.lower()).address == household.address
    assert ops.resolve(household.address).name == HOUSEHOLD


def test_registering_a_known_address_again_is_refused_in_a_plain_sentence(
    ops: Operations, household: LocalAccount
) -> None:
    with pytest.raises(InvalidRequest) as on_record:
        ops.register_external(household.address, "south", name="another")
    assert HOUSEHOLD in on_record.value.message
    stranger = Account.create()
    ops.billing.register_meter(stranger.address, bytes(32), "east", 0)
    with pytest.raises(ChainError) as on_chain:
        ops.register_external(stranger.address, "east")
    assert on_chain.value.message.startswith(f"{stranger.address} is already registered on chain")
    with pytest.raises(InvalidRequest):
        ops.register_external(Account.create().address, "west", name="meter-07")


def test_a_meter_nobody_registered_is_an_unknown_meter_error_saying_how_to_list_meters(ops: Operations) -> None:
    with pytest.raises(UnknownMeter) as by_name:
        ops.resolve("meter-99")
    with pytest.raises(UnknownMeter) as by_address:
        ops.deactivate(Account.create().address)
    for err in (by_name.value, by_address.value):
        assert err.code == "unknown_meter" and "meterctl.py meters" in err.message


# ---------------------------------------------------------------- deactivating


def test_deactivate_and_reactivate_change_the_meter_on_chain_and_refuse_to_repeat(
    ops: Operations, household: LocalAccount
) -> None:
    assert ops.deactivate(HOUSEHOLD).address == household.address
    assert ops.billing.meter(household.address).active is False
    with pytest.raises(MeterInactive) as twice:
        ops.deactivate(household.address)
    assert "already deactivated" in twice.value.message and f"reactivate {HOUSEHOLD}" in twice.value.message
    ops.reactivate(HOUSEHOLD)
    assert ops.billing.meter(household.address).active is True
    with pytest.raises(ChainError) as again:
        ops.reactivate(HOUSEHOLD)
    assert "already active" in again.value.message


def test_gateway_add_lets_another_key_submit_readings_and_remove_takes_it_back(
    settings: Settings, deployment: object
) -> None:
    second = Account.from_key(GANACHE_DEV_KEYS[9]).address
    first = Account.from_key(settings.gateway_key).address
    added = meterctl(settings, "gateway", "add", second.lower())
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"{second} may now submit readings to the contract at ")
    listed = meterctl(settings, "gateway")
    assert listed.stdout.startswith("keys holding GATEWAY_ROLE: ")
    assert first in listed.stdout and second in listed.stdout, listed.stdout
    removed = meterctl(settings, "gateway", "remove", second)
    assert removed.returncode == 0 and "may no longer submit" in removed.stdout, removed.stderr
    assert second not in removed.stdout.splitlines()[-1] and first in removed.stdout.splitlines()[-1]
    bad = meterctl(settings, "gateway", "add", "0x1234")
    assert bad.returncode == 1 and "is not a 0x address of 40 hex digits" in bad.stderr
    assert meterctl(settings, "gateway", "add").returncode == 2


# ---------------------------------------------------------------- tariff


def advance_past(ops: Operations, t: int) -> None:
    """Move the chain's clock past ``t`` (the snapshot puts it back after the test)."""
    ops.billing.client.w3.provider.make_request("evm_increaseTime", [max(0, t - ops.billing.now()) + 5])
    ops.billing.client.w3.provider.make_request("evm_mine", [])


def test_setting_the_tariff_in_pence_puts_millipence_on_chain_from_the_next_half_hour(ops: Operations) -> None:
    before = ops.tariff_history()
    current = ops.tariff()
    new = ops.set_tariff("25.5", "60.125", "15")
    assert new.effective_from % 1_800 == 0 and new.effective_from >= ops.billing.now() + 300
    assert ops.tariff() == current  # coming, not yet in force
    assert "Coming:" in render_tariffs(ops.tariff(), ops.tariff_history(), ops.settings.tz)
    advance_past(ops, new.effective_from)
    on_chain = ops.billing.tariff()
    assert (on_chain.unit_rate, on_chain.export_rate, on_chain.standing_charge, on_chain.version) == (
        25_500, 15_000, 60_125, new.version)
    assert ops.tariff() == new
    assert ops.tariff_history() == [*before, new] and new.version == before[-1].version + 1


def test_a_banded_tariff_file_and_a_day_ahead_price_file_reach_the_chain(ops: Operations, tmp_path: Path) -> None:
    tz = ops.settings.tz
    start = (ops.billing.now() + 3_600) // 1_800 * 1_800
    (tmp_path / "tou.json").write_text(json.dumps({
        "standing_charge": 50, "clock": "local",
        "import": {"kind": "banded", "otherwise": {"name": "day", "rate": 24.67},
                   "bands": [{"name": "off-peak", "from": "00:30", "to": "05:30", "rate": 8.5},
                             {"name": "peak", "from": "16:00", "to": "19:00", "rate": 35}]},
        "export": {"kind": "day_ahead", "fallback": 4.1}}))
    version, names = load_version(tmp_path / "tou.json", tz)
    new = ops.set_tariff_version(replace(version, effective_from=start))
    assert names["import"] == {0: "day", 1: "off-peak", 2: "peak"}
    rows = ["start,import,export"] + [
        f"{dt.datetime.fromtimestamp(start + i * 1_800, tz):%Y-%m-%d %H:%M},{20 + i},{5 + i / 10}" for i in range(4)]
    (tmp_path / "prices.csv").write_text("\n".join(rows) + "\n")
    first, imports, exports = load_prices(tmp_path / "prices.csv", tz)
    assert (first, imports, exports) == (start, [20_000, 21_000, 22_000, 23_000], [5_000, 5_100, 5_200, 5_300])
    assert ops.publish_prices(first, imports, exports) == 4
    fn = ops.billing.contract.functions
    local = dt.datetime.fromtimestamp(start, tz)
    band = version.import_rule.bands[local.hour * 2 + local.minute // 30]
    assert version.import_rule.band_rates[:3] == (24_670, 8_500, 35_000)  # otherwise, off-peak, peak
    assert fn.pricesAt(start).call() == [version.import_rule.band_rates[band], 5_000]
    assert fn.pricesAt(start + 3 * 1_800).call()[1] == 5_300
    assert fn.pricesAt(start + 4 * 1_800).call()[1] == 4_100  # not published: the fallback
    assert new.describe()[1] == "day-ahead, else 4.10p/kWh"


@pytest.mark.parametrize("text", [
    '{"standing_charge": 50, "import": {"kind": "flat", "rate": 0}}',
    '{"standing_charge": 50, "import": {"kind": "banded", "otherwise": {"rate": 20}, "bands": '
    '[{"from": "01:00", "to": "03:00", "rate": 5}, {"from": "02:00", "to": "04:00", "rate": 6}]}}',
    '{"standing_charge": 50, "import": {"kind": "banded", "otherwise": {"rate": 20}, "bands": '
    '[{"from": "01:15", "to": "03:00", "rate": 5}]}}',
    '{"standing_charge": 50, "clock": "bst", "import": {"kind": "flat", "rate": 20}}',
    '{"standing_charge": 50, "import": {"kind": "hourly", "rate": 20}}',
], ids=["zero-rate", "overlapping-bands", "off-the-half-hour", "unknown-clock", "unknown-kind"])
def test_a_tariff_file_the_contract_cannot_hold_is_refused_with_a_reason(text: str, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(InvalidRequest) as refused:
        load_version(tmp_path / "bad.json", ZoneInfo("Europe/London"))
    assert refused.value.code == "invalid_request" and refused.value.message


@pytest.mark.parametrize(("unit_rate", "standing"), [
    ("24.6701", "57.21"), ("24.67", "57.2101"), ("0", "57.21"), ("-1", "57.21"), ("24.67", "-0.5"),
    ("abc", "57.21"), ("NaN", "57.21"), ("5000000", "57.21"),
])
def test_tariff_values_the_contract_cannot_hold_are_refused_before_any_transaction(
    ops: Operations, unit_rate: str, standing: str
) -> None:
    version = ops.billing.tariff().version
    with pytest.raises(InvalidRequest) as refused:
        ops.set_tariff(unit_rate, standing)
    assert refused.value.code == "invalid_request"
    assert ops.billing.tariff().version == version


def test_setting_one_rate_keeps_the_others_of_the_newest_version(ops: Operations) -> None:
    before = ops.tariff()
    unit_only = ops.set_tariff(unit_rate_pence="30")
    assert (unit_only.unit_rate, unit_only.standing_charge) == (30_000, before.standing_charge)
    standing_only = ops.set_tariff(standing_charge_pence="61.5")
    assert (standing_only.unit_rate, standing_only.standing_charge) == (30_000, 61_500)
    assert standing_only.effective_from == unit_only.effective_from + 1_800  # queued after the coming one
    advance_past(ops, standing_only.effective_from)
    assert ops.tariff() == standing_only and standing_only.version == before.version + 2


def test_a_tariff_change_that_changes_nothing_is_refused_before_any_transaction(ops: Operations) -> None:
    current = ops.tariff()
    for unit_rate, standing in [(None, None), (format_pence(current.unit_rate)[:-1], None),
                                (None, format_pence(current.standing_charge)[:-1])]:
        with pytest.raises(InvalidRequest):
            ops.set_tariff(unit_rate, standing)
    assert ops.tariff() == current


def test_the_tariff_change_says_which_rate_changed_and_which_stayed() -> None:
    before = TariffVersion(1, 24_670, 57_210, 0)
    after = TariffVersion(2, 30_000, 57_210, 1_800)
    assert render_tariff_change(before, after, ZoneInfo("UTC")).splitlines() == [
        "tariff version 2 added (version 1 is in force); it prices energy used from 1970-01-01 00:30 on "
        "(energy used before keeps the prices it had)",
        "  unit rate: 24.67p/kWh -> 30.00p/kWh (changed)",
        "  standing charge: 57.21p/day (unchanged)",
        "  export rate: 0.00p/kWh (unchanged)",
    ]


def test_pence_parse_into_millipence_and_amounts_print_in_their_units() -> None:
    assert parse_pence("24.67", "unit rate", allow_zero=False) == 24_670
    assert parse_pence(" 0.001 ", "unit rate", allow_zero=False) == 1
    assert parse_pence("0", "standing charge", allow_zero=True) == 0
    assert (format_pence(24_670), format_pence(24_675), format_pence(0)) == ("24.67p", "24.675p", "0.00p")
    assert (format_kwh(1_234_567), format_kwh(5)) == ("1,234.567 kWh", "0.005 kWh")


# ---------------------------------------------------------------- billing periods


def test_closing_a_period_issues_the_bill_open_bill_showed_and_an_empty_period_is_left_open(
    ops: Operations, settings: Settings, household: LocalAccount
) -> None:
    read(ops, household, (60, 300), (60, 250))
    shown = open_period(ops, household.address)
    result = ops.close_period(HOUSEHOLD)
    assert result.issued and result.period == shown and shown.energy_wh == 550
    assert issued_on_chain(ops, household.address) == [shown]
    assert "£" in render_close(result, settings.tz) and "0.550 kWh" in render_close(result, settings.tz)

    empty = ops.close_period(HOUSEHOLD)
    assert not empty.issued and empty.period.period_id == shown.period_id + 1
    assert issued_on_chain(ops, household.address) == [shown]
    assert "nothing to bill" in render_close(empty, settings.tz)


def test_close_all_bills_the_meters_with_readings_and_goes_past_the_empty_ones(
    ops: Operations, household: LocalAccount
) -> None:
    quiet = Account.create()
    ops.register_external(quiet.address, "south", name="quiet-house")
    read(ops, household, (90, 400))
    shown = open_period(ops, household.address)
    results = {r.meter.name: r for r in ops.close_all()}
    assert results[HOUSEHOLD].issued and results[HOUSEHOLD].period == shown
    assert not results["quiet-house"].issued
    assert issued_on_chain(ops, quiet.address) == []


# ---------------------------------------------------------------- statements


def test_statement_holds_the_customer_the_issued_bills_the_open_period_and_the_tariffs_as_on_chain(
    ops: Operations, settings: Settings, household: LocalAccount
) -> None:
    tariff_at_registration = ops.tariff()
    read(ops, household, (60, 300))
    ops.close_period(HOUSEHOLD)
    new_tariff = ops.set_tariff("30", "50")
    read(ops, household, (60, 200), (60, 100))
    statement = ops.statement(HOUSEHOLD)

    assert statement.customer is not None and statement.customer.name == "Ada Lovelace"
    assert statement.meter.address == household.address and statement.region == "north"
    assert statement.account_ref == customers(settings)[HOUSEHOLD]["account_ref"]
    assert statement.issued == issued_on_chain(ops, household.address) and len(statement.issued) == 1
    assert statement.open == open_period(ops, household.address) and statement.open.energy_wh == 300
    assert statement.tariffs == [tariff_at_registration, new_tariff]

    text = render_statement(statement, settings.tz)
    for expected in ("Ada Lovelace", "1 Analytical Row, London N1", household.address, "0.300 kWh",
                     "30.00p/kWh", "50.00p/day", f"Total billed: {format_pounds(statement.issued[0].amount_due)}"):
        assert expected in text
    data = statement_json(statement, settings.tz)
    assert data["customer"]["name"] == "Ada Lovelace"
    assert [p["amountDue"] for p in data["issued"]] == [p.amount_due for p in statement.issued]
    assert data["open"]["energyWh"] == 300


async def test_meterctl_statement_writes_the_same_pdf_and_csv_from_the_chain_as_the_api_serves_from_its_index(
    snapshot: None, server: ServerApp, server_settings: Settings, new_meter: Any, write_readings: Any,
    billing: Billing, tmp_path: Path,
) -> None:
    s = await issued_and_open(server, new_meter, write_readings, billing)
    operator = {"X-API-Key": (server_settings.data_dir / "api" / "operator.key").read_text().strip()}
    async with httpx.AsyncClient(base_url=server_settings.http_url, headers=operator, timeout=60) as api:
        for period, state in ((1, "issued"), (2, "provisional")):
            pdf, csv_file = tmp_path / f"{period}.pdf", tmp_path / f"{period}.csv"
            result = await asyncio.to_thread(meterctl, server_settings, "statement", "meter-s", "--period",
                                             str(period), "--pdf", str(pdf), "--csv", str(csv_file))
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines()[0].startswith(f"wrote {pdf}: period {period} ({state}), ")
            served = (await api.get(f"/api/v1/meters/{s.meter.address}/bills/{period}/statement.csv")).text
            written = csv_file.read_bytes().decode()
            assert "drawn_up_at" in written and "reading," in written
            drop = re.compile(r"^summary,drawn_up_at,.*$", re.M)  # the one line that depends on when
            assert drop.sub("", written) == drop.sub("", served)
            text = pdf_text(pdf.read_bytes())
            assert ("Electricity statement (provisional)" in text) == (state == "provisional")
            assert "Holder of meter-s" in text
    refused = await asyncio.to_thread(meterctl, server_settings, "statement", "meter-s", "--period", "9", "--pdf")
    assert refused.returncode == 1
    assert "meter-s" in refused.stderr and "has no billing period 9: its periods are 1 to 2" in refused.stderr
    assert meterctl(server_settings, "statement", "meter-s", "--period", "1").returncode == 2  # --period needs a file


# ---------------------------------------------------------------- the script


def test_meterctl_prints_a_statement_and_the_meter_list_and_exits_0(
    ops: Operations, settings: Settings, household: LocalAccount
) -> None:
    read(ops, household, (60, 300))
    ops.close_period(HOUSEHOLD)
    statement = meterctl(settings, "statement", HOUSEHOLD)
    assert statement.returncode == 0, statement.stderr
    expected = render_statement(ops.statement(HOUSEHOLD), settings.tz).splitlines()
    printed = statement.stdout.splitlines()
    assert printed[0].startswith(f"Statement for {HOUSEHOLD}, drawn up ")
    assert printed[1:] == expected[1:]

    listing = meterctl(settings, "meters")
    assert listing.returncode == 0, listing.stderr
    line = next(x for x in listing.stdout.splitlines() if x.startswith(HOUSEHOLD))
    assert household.address in line and "north" in line and "active" in line


def test_meterctl_tariff_with_the_unit_rate_alone_keeps_the_standing_charge_and_says_so(
    ops: Operations, settings: Settings
) -> None:
    before = ops.tariff()
    result = meterctl(settings, "tariff", "--unit-rate", "30")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"tariff version {before.version + 1} added (version {before.version} is in force); "
                               "it prices energy used from ")
    assert lines[1] == f"  unit rate: {format_pence(before.unit_rate)}/kWh -> 30.00p/kWh (changed)"
    assert lines[2] == f"  standing charge: {format_pence(before.standing_charge)}/day (unchanged)"
    after = ops.tariff_history()[-1]
    assert (after.unit_rate, after.standing_charge) == (30_000, before.standing_charge)


def test_meterctl_reports_an_unknown_meter_on_stderr_with_its_code_and_exits_1(settings: Settings) -> None:
    result = meterctl(settings, "close-period", "meter-99")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("meterctl: error [unknown_meter]: no meter is named 'meter-99'")
    assert "meterctl.py meters" in result.stderr


def test_halfhours_gives_a_meters_day_in_settlement_periods_priced_as_the_contract_prices_them(
    ops: Operations, settings: Settings, household: LocalAccount
) -> None:
    start = ops.billing.meter(household.address).last_timestamp
    advance_past(ops, start + 8_400)
    read(ops, household, (600, 100), (600, 110), (7_200, 1_300))
    end = start + 8_400
    day = datetime.fromtimestamp(end, settings.tz).date()
    meter, rows = ops.half_hours(HOUSEHOLD, day)
    assert meter.address == household.address and rows
    day_start = int(datetime.combine(day, datetime.min.time(), tzinfo=settings.tz).timestamp())
    if start >= day_start:  # every reading in the day: the parts add up to the register's growth
        assert sum(r.import_wh for r in rows) == 1_510
    schedule = ops.billing.schedule()
    for r in rows:
        assert (r.import_price, r.export_price) == schedule.prices(r.start // 1_800)
        assert r.import_cost == r.import_wh * r.import_price
    assert not rows[-1].actual  # spanned by the two-hour gap
    result = meterctl(settings, "halfhours", HOUSEHOLD, "--date", day.isoformat())
    assert result.returncode == 0, result.stderr
    assert "estimated" in result.stdout and "total" in result.stdout
    assert render_half_hours(meter, day, rows, settings.tz).splitlines()[0].startswith(f"{HOUSEHOLD}")


# ---------------------------------------------------------------- transactions seen through to finality


def test_a_close_whose_answer_was_lost_after_the_node_took_it_closes_the_period_once(
    ops: Operations, settings: Settings, household: LocalAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    read(ops, household, (60, 300))
    shown = open_period(ops, household.address)
    other = Operations(settings)  # the gateway, carrying on meanwhile
    eth = ops.billing.client.w3.eth
    real_send = eth.send_raw_transaction
    sent: list[Any] = []

    def answer_lost(raw: Any) -> Any:
        tx_hash = real_send(raw)  # the node takes the close...
        sent.append(tx_hash)
        if len(sent) == 1:
            read(other, household, (60, 200))  # ...a reading is recorded after it...
            raise ConnectionError("connection reset before the node's answer arrived")  # ...and the answer is lost
        return tx_hash

    monkeypatch.setattr(eth, "send_raw_transaction", answer_lost)
    result = ops.close_period(HOUSEHOLD)
    assert result.issued and result.period == shown, "the bill reported is not the one the first send issued"
    assert issued_on_chain(ops, household.address) == [shown], "the retry closed the period a second time"
    assert len(sent) == 1 and open_period(ops, household.address).energy_wh == 200


@pytest.fixture
def anvil_ops(anvil_settings: Settings, anvil_deployment: object, tmp_path: Path) -> Operations:
    """The operator's tool on the session's Anvil (a block a second, CONFIRMATIONS=2)."""
    return Operations(anvil_settings.replace(data_dir=tmp_path / "data"))


def _until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_close_period_under_a_reorganisation_reports_the_bill_only_once_final_on_the_new_chain(
    anvil_ops: Operations, anvil: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ops = anvil_ops
    assert ops.settings.finality_depth == 2
    account: LocalAccount = Account.create()
    ops.register_external(account.address, "north", name=HOUSEHOLD, opening_wh=5_000_000)
    read(ops, account, (60, 300))
    shown = open_period(ops, account.address)
    operator = Account.from_key(ops.settings.operator_key).address

    def head() -> int:
        return int(anvil.rpc("eth_blockNumber"), 16)

    def close_pending() -> bool:
        return bool(int(anvil.rpc("eth_getTransactionCount", [operator, "pending"]), 16)
                    > int(anvil.rpc("eth_getTransactionCount", [operator, "latest"]), 16))

    def still_waiting(closing: Any) -> bool:
        time.sleep(1.0)  # four looks of the tool at the chain
        return not closing.done()

    anvil.rpc("evm_setIntervalMining", [0])  # from here a block comes only when the test mines one
    try:
        with ThreadPoolExecutor(1) as pool, caplog.at_level(logging.INFO, logger="chain"):
            closing = pool.submit(ops.close_period, HOUSEHOLD)
            _until(close_pending, "the close to be sent")
            anvil.rpc("evm_mine")
            first_block = head()
            tx_hash = anvil.rpc("eth_getBlockByNumber", [hex(first_block), False])["transactions"][0]
            assert still_waiting(closing), "reported before a block was on top of the bill's"
            anvil.rpc("evm_mine")
            assert still_waiting(closing), "reported with 1 block on top, CONFIRMATIONS is 2"
            anvil.rpc("anvil_reorg", [2, []])  # both blocks replaced by empty ones: the bill is gone
            assert anvil.rpc("eth_getTransactionReceipt", [tx_hash]) is None
            anvil.rpc("evm_mine")  # 2 blocks on top of where the bill was: the tool finds it gone
            _until(close_pending, "the same close to be sent again")
            assert not closing.done(), "reported a bill the reorganisation removed"
            anvil.rpc("evm_mine")
            again_block = head()
            anvil.rpc("evm_mine")
            assert still_waiting(closing), "reported with 1 block on top of the bill mined again"
            anvil.rpc("evm_mine")
            result = closing.result(timeout=60)
    finally:
        anvil.rpc("evm_setIntervalMining", [1])
    assert result.issued and result.period == shown
    assert issued_on_chain(ops, account.address) == [shown], "the bill is not on the chain once"
    outcome = ops.transactions[-1]
    assert (outcome.tx_hash, outcome.block, outcome.final) == (tx_hash, again_block, True)
    assert outcome.confirmations >= 2
    events = [getattr(r, "fields", {}).get("event") for r in caplog.records]
    assert "tx_reorganised_away" in events and "tx_resent" in events


@pytest.mark.slow
def test_meterctl_says_final_once_final_and_with_no_wait_sent_not_yet_final_with_the_hash(
    anvil_ops: Operations, anvil_settings: Settings
) -> None:
    settings = anvil_ops.settings
    account: LocalAccount = Account.create()
    anvil_ops.register_external(account.address, "north", name=HOUSEHOLD, opening_wh=5_000_000)
    began = time.monotonic()
    waited = meterctl(settings, "deactivate", HOUSEHOLD)
    took = time.monotonic() - began
    assert waited.returncode == 0, waited.stderr
    lines = waited.stdout.splitlines()
    assert lines[0].startswith(f"deactivated {HOUSEHOLD} ")
    found = re.fullmatch(r"final: transaction (0x[0-9a-f]{64}) in block (\d+), (\d+) blocks on top \(CONFIRMATIONS=2\)",
                         lines[1])
    assert found and int(found.group(3)) >= 2
    began = time.monotonic()
    quick = meterctl(settings, "--no-wait", "reactivate", HOUSEHOLD)
    print(f"\nmeterctl on Anvil (a block a second, CONFIRMATIONS=2): deactivate until final {took:.1f} s, "
          f"reactivate --no-wait {time.monotonic() - began:.1f} s")
    assert quick.returncode == 0, quick.stderr
    lines = quick.stdout.splitlines()
    assert lines[0].startswith(f"reactivated {HOUSEHOLD} ")
    assert re.fullmatch(r"sent, not yet final: transaction 0x[0-9a-f]{64} in block \d+; final once CONFIRMATIONS=2 "
                        r"blocks are on top of it \(a reorganisation may still remove it\)", lines[1])


@pytest.mark.slow
def test_a_change_whose_block_gets_no_blocks_on_top_is_not_final_and_says_its_hash(
    anvil_ops: Operations, anvil: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import common.chain

    account: LocalAccount = Account.create()
    anvil_ops.register_external(account.address, "north", name=HOUSEHOLD, opening_wh=5_000_000)
    monkeypatch.setattr(common.chain, "BLOCK_TIMEOUT", 1.5)
    anvil.rpc("evm_setIntervalMining", [0])  # the chain stops producing blocks
    try:
        with ThreadPoolExecutor(1) as pool:
            deactivating = pool.submit(anvil_ops.deactivate, HOUSEHOLD)
            operator = Account.from_key(anvil_ops.settings.operator_key).address
            _until(lambda: int(anvil.rpc("eth_getTransactionCount", [operator, "pending"]), 16)
                   > int(anvil.rpc("eth_getTransactionCount", [operator, "latest"]), 16), "the change to be sent")
            anvil.rpc("evm_mine")  # mined, and then no block on top of it
            with pytest.raises(NotFinal) as refused:
                deactivating.result(timeout=60)
    finally:
        anvil.rpc("evm_setIntervalMining", [1])
    assert refused.value.code == "not_final"
    assert re.search(r"transaction 0x[0-9a-f]{64} was sent and mined in block \d+, but only 0 of CONFIRMATIONS=2 "
                     r"blocks are on top of it so far: not final yet", refused.value.message)
