"""The index follows a withdrawn tariff version or clock change: it leaves the tariff list and the
schedule (in memory and as read back from the tables), the next version takes its number, and a
reorganisation that undoes the withdrawal brings it back."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from common.events import ChainEvent
from common.tariff import TariffVersion
from server.indexing.index import Index
from tests.support import both_indexes

LONDON = ZoneInfo("Europe/London")
FIELDS = ("effectiveFrom", "standingCharge", "clock", "importKind", "importRate", "exportKind", "exportRate",
          "importBands", "importBandRates", "exportBands", "exportBandRates")


def _tariff(number: int, version: TariffVersion, block: int) -> ChainEvent:
    args: dict[str, Any] = {"version": number, **dict(zip(FIELDS, version.as_struct(), strict=True))}
    return ChainEvent("TariffChanged", args, block, 0, f"0x{block:02x}")


@both_indexes
def test_withdrawn_versions_and_clock_changes_leave_the_index_and_come_back_when_the_block_is_replaced(
    new_index_url, tmp_path
) -> None:
    path = tmp_path / "index.sqlite"
    url = new_index_url()
    index = Index(path, LONDON, url=url)
    opening, far = TariffVersion.flat(24_670, 57_210), TariffVersion.flat(40_000, 60_000, 1_900_000_000)
    index.apply([_tariff(1, opening, 1), _tariff(2, far, 2),
                 ChainEvent("ClockChangeAdded", {"at": 1_800_000_000, "offsetMinutes": 60}, 2, 1, "0x02"),
                 ChainEvent("ClockChangeAdded", {"at": 1_900_000_000, "offsetMinutes": 0}, 2, 2, "0x02")],
                {1: 1_700_000_000, 2: 1_700_000_100})
    assert [t["version"] for t in index.tariffs()] == [2, 1]
    index.apply([ChainEvent("TariffWithdrawn", {"version": 2, "effectiveFrom": far.effective_from}, 3, 0, "0x03"),
                 ChainEvent("ClockChangeWithdrawn", {"at": 1_900_000_000, "offsetMinutes": 0}, 3, 1, "0x03")],
                {3: 1_700_000_200}, final=2)
    assert [t["version"] for t in index.tariffs()] == [1]
    assert index.schedule.versions == [opening]
    assert index.schedule.clock.changes == ((1_800_000_000, 60),)
    index.close()
    index = Index(path, LONDON, url=url)  # the schedule as read back from the tables
    assert index.schedule.versions == [opening] and index.schedule.clock.changes == ((1_800_000_000, 60),)

    index.rollback(2)  # block 3 replaced: the withdrawals never happened
    assert [t["version"] for t in index.tariffs()] == [2, 1]
    assert index.schedule.versions == [opening, far]
    assert index.schedule.clock.changes == ((1_800_000_000, 60), (1_900_000_000, 0))

    nearer = TariffVersion.flat(30_000, 58_000, 1_850_000_000)
    index.apply([ChainEvent("TariffWithdrawn", {"version": 2, "effectiveFrom": far.effective_from}, 3, 0, "0xa3"),
                 _tariff(2, nearer, 4)], {3: 1_700_000_200, 4: 1_700_000_300})
    assert [(t["version"], t["effective_from"]) for t in index.tariffs()] == [(2, nearer.effective_from), (1, 0)]
    assert index.schedule.versions == [opening, nearer]
    index.close()
