"""The statement model (common/statement.py) and its PDF and CSV (common/statement_render.py), without a chain:
days in local time across the autumn clock change, a tariff change inside the period, the checks against the
chain's figures, and the documents read back."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from common.errors import StatementMismatch
from common.statement import (
    Account,
    ChainPlace,
    CreditLine,
    Issue,
    MeterRestart,
    RecordedReading,
    Statement,
    Status,
    build_statement,
)
from common.statement_render import filename, to_csv, to_pdf
from common.tariff import (
    CLOCK_LOCAL,
    ClockTable,
    OpenBill,
    PriceRule,
    Schedule,
    TariffVersion,
    cost_of,
    format_pounds,
    standing_charge,
    uk_clock_changes,
)

LONDON = ZoneInfo("Europe/London")
#: 2026-10-24 00:00 BST, two days before the clocks go back (2026-10-25 01:00 UTC).
START = int(dt.datetime(2026, 10, 24, tzinfo=LONDON).timestamp())
CHANGE = int(dt.datetime(2026, 10, 25, 12, tzinfo=LONDON).timestamp())
BANDS = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]
SCHEDULE = Schedule(
    [TariffVersion.flat(24_670, 57_210, 0, 15_000),
     TariffVersion(CHANGE, 61_111, PriceRule.banded(BANDS, [8_500, 31_234, 35_000]), PriceRule.flat(5_500),
                   CLOCK_LOCAL)],
    ClockTable(tuple(uk_clock_changes(2026, 2026))),
)
ACCOUNT = Account("0x5B38Da6a701c568545dCfcB03FcB875f56beddC4", "meter-07", "0x" + "ab" * 32, "north",
                  "Zoë Łukasiewicz", "=HYPERLINK(\"http://x\") 12 Acacia Avenue, Leeds")
CHAIN = ChainPlace(1337, "0xCfEB869F69431e42cdB54A4F4f105C19C080A601")


def readings(count: int, wh: int = 100, export: int = 10, gap_after: int = 0) -> list[RecordedReading]:
    """Half-hourly readings from START, ``wh`` imported and ``export`` exported in each half hour (a gap of five
    hours after reading ``gap_after`` if given)."""
    out, t = [], START
    for seq in range(1, count + 1):
        t += 1_800 + (5 * 3_600 if seq == gap_after + 1 and gap_after else 0)
        out.append(RecordedReading(seq, t, 50_000 + seq * wh, seq * export, 100 + seq, f"0x{seq:064x}"))
    return out


def figures_of(rs: list[RecordedReading], opening: tuple[int, int] = (50_000, 0)) -> OpenBill:
    """The period's figures as the contract computes them (the reference arithmetic)."""
    cost = credit = 0
    t, imported, exported = START, *opening
    for r in rs:
        c, e = cost_of(SCHEDULE, t, r.timestamp, r.import_register_wh - imported, r.export_register_wh - exported)
        cost, credit = cost + c, credit + e
        t, imported, exported = r.timestamp, r.import_register_wh, r.export_register_wh
    return OpenBill(3, START, t, imported - opening[0], exported - opening[1], cost, credit,
                    standing_charge(SCHEDULE.versions, START, t))


def statement(rs: list[RecordedReading], issue: Issue | None = None, **changes: int) -> Statement:
    figures = replace(figures_of(sorted(rs, key=lambda r: r.seq)), **changes)
    return build_statement(account=ACCOUNT, chain=CHAIN, figures=figures, amount_due=figures.amount_due,
                           issue=issue, opening=(50_000, 0), readings=rs, schedule=SCHEDULE, tz=LONDON,
                           drawn_up_at=START + 9 * 86_400)


def test_consumption_is_counted_in_local_days_the_25_hour_day_holding_50_half_hours():
    st = statement(readings(3 * 48 + 2))  # 24 Oct 00:30 BST to 26 Oct 00:00 GMT and an hour more
    assert [d.day for d in st.days] == [dt.date(2026, 10, 24), dt.date(2026, 10, 25), dt.date(2026, 10, 26)]
    assert [d.import_wh for d in st.days] == [48 * 100, 50 * 100, 48 * 100]
    assert sum(d.import_wh for d in st.days) == st.import_wh == st.closing_import_wh - st.opening_import_wh
    assert sum(d.import_cost for d in st.days) == st.energy_charge
    assert sum(d.export_credit for d in st.days) == st.total_credits == st.credits[0].amount
    assert st.amount_due == st.energy_charge + st.standing_charge - st.total_credits
    assert st.status is Status.PROVISIONAL and st.provisional


def test_the_tariffs_in_force_are_each_version_for_the_part_of_the_period_it_priced():
    rs = readings(3 * 48)
    st = statement(rs)
    assert [(t.version, t.start, t.end) for t in st.tariffs] == [(1, START, CHANGE), (2, CHANGE, rs[-1].timestamp)]
    assert st.tariffs[0].import_pricing == "flat 24.67p/kWh"
    assert st.tariffs[1].import_pricing.startswith("off-peak 8.50p 00:30-05:30") and "UK clock" in st.tariffs[1].clock
    # The day of the change costs its morning at 24.67p and its afternoon by band.
    day = next(d for d in st.days if d.day == dt.date(2026, 10, 25))
    assert day.import_cost == sum(cost_of(SCHEDULE, t, t + 1_800, 100, 0)[0] for t in range(
        int(dt.datetime(2026, 10, 25, tzinfo=LONDON).timestamp()), int(dt.datetime(2026, 10, 26, tzinfo=LONDON)
                                                                        .timestamp()), 1_800))


def test_a_gap_is_spread_over_the_days_it_spans_and_the_appendix_keeps_each_readings_energy():
    rs = readings(60, gap_after=30)
    st = statement(rs)
    assert [r.import_wh for r in st.readings] == [100] * 60  # 100 Wh over the 5.5-hour gap too
    assert sum(d.import_wh for d in st.days) == 6_000
    assert [(r.seq, r.block, r.tx_hash) for r in st.readings] == [(r.seq, r.block, r.tx_hash) for r in rs]


@pytest.mark.parametrize(("field", "what"), [("import_cost", "import charge"), ("export_wh", "export Wh"),
                                             ("standing_charge", "standing charge"), ("period_end", "last reading")])
def test_a_statement_that_does_not_add_up_to_the_chains_figures_is_refused(field, what):
    rs = readings(10)
    wrong = getattr(figures_of(rs), field) + 1
    with pytest.raises(StatementMismatch, match=what) as refused:
        statement(rs, **{field: wrong})
    assert refused.value.code == "statement_mismatch"


def test_readings_out_of_order_are_refused():
    rs = readings(5)
    with pytest.raises(StatementMismatch, match="out of order"):
        statement([rs[0], rs[2], rs[1], rs[3], rs[4]])


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_the_pdf_reads_back_with_every_figure_a_name_outside_latin_1_and_every_readings_transaction():
    rs = readings(120)
    st = statement(rs)
    text = pdf_text(to_pdf(st))
    flat = re.sub(r"\s+", "", text)
    assert "Electricity statement (provisional)" in text and "PROVISIONAL: period 3 is still open" in text
    for expected in ("Zoë Łukasiewicz", ACCOUNT.account_ref, ACCOUNT.meter, CHAIN.contract,
                     format_pounds(st.amount_due), format_pounds(st.energy_charge), format_pounds(st.standing_charge),
                     "-" + format_pounds(st.total_credits), "Sat 24 Oct 2026", "Sun 25 Oct 2026",
                     *(r.tx_hash for r in rs)):
        assert re.sub(r"\s+", "", expected) in flat, expected
    issued = statement(rs, Issue("0x" + "cd" * 32, START + 9 * 86_400))
    text = pdf_text(to_pdf(issued))
    assert "provisional" not in text.lower() and "0x" + "cd" * 32 in re.sub(r"\s+", "", text)
    assert filename(issued, "pdf") == "statement-meter-07-period-3.pdf"
    assert filename(st, "csv") == "statement-meter-07-period-3-provisional.csv"


def test_the_csv_holds_the_same_figures_in_integers_and_defuses_spreadsheet_formulas():
    rs = readings(50)
    st = statement(rs)
    rows = list(csv.reader(io.StringIO(to_csv(st))))
    summary = {r[1]: r[2] for r in rows if r and r[0] == "summary"}
    assert summary["postal_address"].startswith("'=HYPERLINK")  # not run as a formula
    assert int(summary["amount_due_micropence"]) == st.amount_due and summary["amount_due"] == format_pounds(
        st.amount_due)
    assert [int(r[1]) for r in rows if r and r[0] == "reading"] == list(range(1, 51))
    assert sum(int(r[2]) for r in rows if r and r[0] == "day") == st.import_wh
    assert [r[1] for r in rows if r and r[0] == "tariff"] == ["1"]


def test_credits_beyond_the_export_credit_are_listed_and_lower_the_amount_due_the_chain_states():
    rs = readings(20)
    figures = figures_of(rs)
    bonus = CreditLine("demand_response", "Demand response: 1.2 kWh less in the 17:00-19:00 event", 360_000_000)
    st = build_statement(account=ACCOUNT, chain=CHAIN, figures=figures, amount_due=figures.amount_due - bonus.amount,
                         issue=None, opening=(50_000, 0), readings=rs, schedule=SCHEDULE, tz=LONDON,
                         drawn_up_at=START, credits=[bonus])
    assert [c.kind for c in st.credits] == ["export", "demand_response"]
    assert st.amount_due == st.energy_charge + st.standing_charge - st.total_credits
    assert "-" + format_pounds(bonus.amount) in pdf_text(to_pdf(st))
    with pytest.raises(StatementMismatch, match="amount due"):  # a credit the chain's amount does not hold
        build_statement(account=ACCOUNT, chain=CHAIN, figures=figures, amount_due=figures.amount_due, issue=None,
                        opening=(50_000, 0), readings=rs, schedule=SCHEDULE, tz=LONDON, drawn_up_at=START,
                        credits=[bonus])


def test_a_statement_across_a_register_reset_counts_the_final_read_and_the_new_registers():
    before = readings(4)
    final = RecordedReading(4, before[-1].timestamp + 900, before[-1].import_register_wh + 60,
                            before[-1].export_register_wh + 6, 110, "0x" + "f" * 64, "reset")
    reset = MeterRestart("reset", final.timestamp, ACCOUNT.meter, 0, 0, 110, "0x" + "f" * 64)
    after = [RecordedReading(seq, final.timestamp + seq * 1_800, seq * 100, seq * 10, 120 + seq, f"0x{seq:064x}")
             for seq in (1, 2)]
    rs = [*before, final, *after]
    # The contract's figures: the final read priced as a reading, then the new registers' energy.
    cost = credit = 0
    t, imported, exported = START, 50_000, 0
    for r in rs:
        if r is after[0]:
            imported, exported = 0, 0
        c, e = cost_of(SCHEDULE, t, r.timestamp, r.import_register_wh - imported, r.export_register_wh - exported)
        cost, credit, t, imported, exported = cost + c, credit + e, r.timestamp, r.import_register_wh, \
            r.export_register_wh
    figures = OpenBill(3, START, t, 4 * 100 + 60 + 200, 4 * 10 + 6 + 20, cost, credit,
                       standing_charge(SCHEDULE.versions, START, t))
    st = build_statement(account=ACCOUNT, chain=CHAIN, figures=figures, amount_due=figures.amount_due, issue=None,
                         opening=(50_000, 0), readings=rs, schedule=SCHEDULE, tz=LONDON, drawn_up_at=START,
                         restarts=[reset])
    assert [(r.seq, r.source, r.import_wh) for r in st.readings] == [
        (1, "meter", 100), (2, "meter", 100), (3, "meter", 100), (4, "meter", 100), (4, "reset", 60),
        (1, "meter", 100), (2, "meter", 100)]
    assert (st.opening_import_wh, st.closing_import_wh, st.restarts) == (50_000, 200, (reset,))
    text = to_csv(st)
    assert f"reading,4,{final.timestamp}," in text and text.count("final_read_reset") == 1
    assert "restart,reset," in text and "Register reset" in pdf_text(to_pdf(st))
    # Without the reset the new registers read as a fall; a reset outside the period is refused.
    with pytest.raises(StatementMismatch, match="out of order"):
        build_statement(account=ACCOUNT, chain=CHAIN, figures=figures, amount_due=figures.amount_due, issue=None,
                        opening=(50_000, 0), readings=rs, schedule=SCHEDULE, tz=LONDON, drawn_up_at=START)
    with pytest.raises(StatementMismatch, match="the reset at"):
        build_statement(account=ACCOUNT, chain=CHAIN, figures=figures, amount_due=figures.amount_due, issue=None,
                        opening=(50_000, 0), readings=rs, schedule=SCHEDULE, tz=LONDON, drawn_up_at=START,
                        restarts=[replace(reset, at=START - 1)])
