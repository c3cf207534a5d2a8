"""docs/protocol.md's example figures follow the bill rule: recomputed with common.tariff."""

from __future__ import annotations

import json
import re
from typing import Any

from common.settings import ROOT
from common.tariff import MeterLedger, Tariff, accrue

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


def test_the_welcome_bill_is_the_half_hourly_readings_since_the_period_began_at_its_tariff() -> None:
    welcome = example("welcome")
    bill, tariff = welcome["bill"], welcome["tariff"]
    readings = welcome["lastSeq"]
    # As the doc says: the meter opened at periodStart and read every half hour since.
    interval, rest = divmod(welcome["lastTimestamp"] - bill["periodStart"], readings)
    assert rest == 0 and interval == 1_800
    opening = welcome["lastEnergyWh"] - bill["periodEnergyWh"]
    ledger = MeterLedger(True, 0, bill["periodStart"], opening)
    per_reading, last_extra = divmod(bill["periodEnergyWh"], readings)
    for seq in range(1, readings + 1):
        energy = ledger.last_energy_wh + per_reading + (last_extra if seq == readings else 0)
        ledger = accrue(ledger, seq, ledger.last_timestamp + interval, energy,
                        Tariff(tariff["unitRate"], tariff["standingCharge"]))
    assert (ledger.last_seq, ledger.last_timestamp, ledger.last_energy_wh) == (
        welcome["lastSeq"], welcome["lastTimestamp"], welcome["lastEnergyWh"])
    assert ledger.period_energy_wh == bill["periodEnergyWh"]
    assert ledger.period_energy_cost == bill["energyCost"]
    assert ledger.period_standing_charge == bill["standingCharge"]
    assert ledger.amount_due == bill["amountDue"] == bill["energyCost"] + bill["standingCharge"]
    assert welcome["lastUsedSeq"] >= welcome["lastSeq"]


def test_the_bill_example_is_the_reading_example_added_to_the_welcome_bill() -> None:
    welcome, reading, bill = example("welcome"), example("reading"), example("bill")
    tariff = welcome["tariff"]
    assert bill["tariff"] == tariff
    ledger = MeterLedger(True, welcome["lastSeq"], welcome["lastTimestamp"], welcome["lastEnergyWh"],
                         welcome["bill"]["periodEnergyWh"], welcome["bill"]["energyCost"],
                         welcome["bill"]["standingCharge"])
    assert reading["seq"] == welcome["lastSeq"] + 1 == bill["seq"]
    after = accrue(ledger, reading["seq"], reading["timestamp"], reading["energyWh"],
                   Tariff(tariff["unitRate"], tariff["standingCharge"]))
    assert bill["energyWh"] == reading["energyWh"] == after.last_energy_wh
    assert bill["periodEnergyWh"] == after.period_energy_wh
    assert bill["amountDue"] == after.amount_due


def test_the_worked_figures_in_the_prose_are_the_examples() -> None:
    welcome, bill = example("welcome"), example("bill")
    section = DOC[DOC.index("## The bill"):DOC.index("## Delivery and resuming")]
    figures = {int(f.replace(",", "")) for f in re.findall(r"\d[\d,]*\d", section)}
    for value in (welcome["bill"]["energyCost"], welcome["bill"]["standingCharge"], welcome["bill"]["amountDue"],
                  bill["amountDue"], welcome["lastSeq"], welcome["bill"]["periodEnergyWh"]):
        assert value in figures, value
