"""docs/protocol.md's example figures follow the bill rule: recomputed with common.tariff."""

from __future__ import annotations

import json
import re
from typing import Any

from common.settings import ROOT
from common.tariff import MeterLedger, Schedule, TariffVersion, accrue, standing_charge

DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def example(kind: str) -> dict[str, Any]:
    """The doc's one JSON example of a message of ``kind``."""
    found = []
    for block in re.findall(r"```json\n(.*?)```", DOC, flags=re.S):
        for text in re.split(r"\n(?=\{)", block.strip()):  # a block may hold several one-line messages
            message = json.loads(text)
            if message.get("type") == kind:
                found.append(message)
    assert len(found) == 1, f"expected one {kind} example, found {len(found)}"
    return found[0]


def schedule_of(tariff: dict[str, int]) -> Schedule:
    """The doc's tariff: version 1, flat import and export rates, in force from the start."""
    assert tariff["version"] == 1
    return Schedule([TariffVersion.flat(tariff["unitRate"], tariff["standingCharge"], 0, tariff["exportRate"])])


def test_the_welcome_bill_is_the_half_hourly_readings_since_the_period_began_at_its_tariff() -> None:
    welcome = example("welcome")
    bill, schedule = welcome["bill"], schedule_of(welcome["tariff"])
    readings = welcome["lastSeq"]
    # As the doc says: the meter opened at periodStart and read every half hour since.
    interval, rest = divmod(welcome["lastTimestamp"] - bill["periodStart"], readings)
    assert rest == 0 and interval == 1_800
    opening = welcome["lastEnergyWh"] - bill["periodEnergyWh"]
    opening_export = welcome["lastExportWh"] - bill["periodExportWh"]
    ledger = MeterLedger(True, 0, bill["periodStart"], opening, opening_export)
    per_reading, last_extra = divmod(bill["periodEnergyWh"], readings)
    export_each, export_extra = divmod(bill["periodExportWh"], readings)
    for seq in range(1, readings + 1):
        energy = ledger.last_energy_wh + per_reading + (last_extra if seq == readings else 0)
        export = ledger.last_export_wh + export_each + (export_extra if seq == readings else 0)
        ledger = accrue(ledger, seq, ledger.last_timestamp + interval, energy, export, schedule)
    assert (ledger.last_seq, ledger.last_timestamp, ledger.last_energy_wh, ledger.last_export_wh) == (
        welcome["lastSeq"], welcome["lastTimestamp"], welcome["lastEnergyWh"], welcome["lastExportWh"])
    assert ledger.period_import_cost == bill["energyCost"]
    assert ledger.period_export_credit == bill["exportCredit"]
    standing = standing_charge(schedule.versions, bill["periodStart"], welcome["lastTimestamp"])
    assert standing == bill["standingCharge"]
    assert bill["amountDue"] == bill["energyCost"] + bill["standingCharge"] - bill["exportCredit"]
    assert welcome["lastUsedSeq"] >= welcome["lastSeq"]


def test_the_bill_example_is_the_reading_example_added_to_the_welcome_bill() -> None:
    welcome, reading, bill = example("welcome"), example("reading"), example("bill")
    tariff = welcome["tariff"]
    assert bill["tariff"] == tariff
    schedule = schedule_of(tariff)
    ledger = MeterLedger(True, welcome["lastSeq"], welcome["lastTimestamp"], welcome["lastEnergyWh"],
                         welcome["lastExportWh"], welcome["bill"]["energyCost"], welcome["bill"]["exportCredit"])
    assert reading["seq"] == welcome["lastSeq"] + 1 == bill["seq"]
    after = accrue(ledger, reading["seq"], reading["timestamp"], reading["energyWh"], reading["exportWh"], schedule)
    assert bill["energyWh"] == reading["energyWh"] == after.last_energy_wh
    assert bill["exportWh"] == reading["exportWh"] == after.last_export_wh
    assert bill["periodEnergyWh"] == welcome["bill"]["periodEnergyWh"] + reading["energyWh"] - welcome["lastEnergyWh"]
    assert (bill["energyCost"], bill["exportCredit"]) == (after.period_import_cost, after.period_export_credit)
    assert bill["standingCharge"] == standing_charge(schedule.versions, welcome["bill"]["periodStart"],
                                                     reading["timestamp"])
    assert bill["amountDue"] == bill["energyCost"] + bill["standingCharge"] - bill["exportCredit"]


def test_the_worked_figures_in_the_prose_are_the_examples() -> None:
    welcome, bill = example("welcome"), example("bill")
    section = DOC[DOC.index("## The bill"):DOC.index("## Delivery and resuming")]
    figures = {int(f.replace(",", "")) for f in re.findall(r"\d[\d,]*\d", section)}
    for value in (welcome["bill"]["energyCost"], welcome["bill"]["standingCharge"], welcome["bill"]["amountDue"],
                  bill["amountDue"], welcome["lastSeq"], welcome["bill"]["periodEnergyWh"]):
        assert value in figures, value
