"""A statement (``common.statement``) as a PDF for people and a CSV for programs: one module for both.

The PDF (fpdf2) is an A4 document: who and which period, the bill (energy charge, standing
charge, credits, amount due), the registers at the period's start and end, the tariffs in force,
the consumption by local day, then an appendix of every reading with its sequence number, time,
registers, block and transaction hash, so any line can be looked up on chain. A provisional
statement (the period is still open) says so in its title, in a box on the first page and on
every page's foot. Money is written by ``common.tariff.format_pounds`` and energy by
``format_kwh``, the project's one formatting of each.

The CSV holds the same content in the project's integer units (Wh, micropence, millipence,
unix seconds beside local ISO 8601 times), in sections: each starts with a header row whose
first cell is ``section``, and every row after it names its section in its first cell.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from common.statement import Statement
from common.tariff import format_kwh, format_pence, format_pounds

__all__ = ["to_pdf", "to_csv", "filename", "describe", "FONT_DIRS"]

#: Where DejaVu Sans is looked for (Debian's fonts-dejavu-core); without it the PDF uses the core
#: Helvetica, whose Latin-1 cannot write every name, so other characters become '?'.
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
             Path("/usr/local/share/fonts/dejavu"))

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Text a spreadsheet would take for a formula when it opens the CSV.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
PAGE_WIDTH = 182.0  # A4 (210 mm) less two margins of 14 mm


def filename(st: Statement, extension: str) -> str:
    """A file name for the statement: ``statement-meter-03-period-2-provisional.pdf``."""
    who = _SAFE.sub("-", st.account.meter_name or st.account.meter).strip("-")
    tail = "-provisional" if st.provisional else ""
    return f"statement-{who}-period-{st.period_id}{tail}.{extension}"


def describe(st: Statement) -> str:
    """The statement in one line: ``period 2 (provisional), 2026-11-24 16:00 to ...: 400 readings, ... due``."""
    state = "provisional" if st.provisional else "issued"
    due = "in credit" if st.in_credit else "due"
    return (f"period {st.period_id} ({state}), {_time(st.period_start, st)} to {_time(st.period_end, st)} "
            f"({st.timezone}): {len(st.readings):,} readings, {format_kwh(st.import_wh)}, "
            f"{format_pounds(st.amount_due)} {due}{' so far' if st.provisional else ''}")


def _time(t: int, st: Statement) -> str:
    return dt.datetime.fromtimestamp(t, st.tz).strftime("%Y-%m-%d %H:%M")


def _iso(t: int, st: Statement) -> str:
    return dt.datetime.fromtimestamp(t, st.tz).isoformat()


def _text(value: str) -> str:
    """Free text for a CSV cell, quoted so no spreadsheet runs it as a formula."""
    return "'" + value if value.startswith(_FORMULA) else value


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    return f"{days} d {rest // 3600} h {rest % 3600 // 60:02d} min"


# ---------------------------------------------------------------- PDF


class _Document(FPDF):
    """The PDF with the statement's fonts and a foot on every page."""

    def __init__(self, st: Statement) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.st = st
        self.set_margins(14, 14, 14)
        self.set_auto_page_break(auto=True, margin=18)
        self.set_title(f"Electricity statement, period {st.period_id}" + (" (provisional)" if st.provisional else ""))
        self.set_author("Smart-meter billing")
        self.set_creator("common/statement_render.py")
        found = next((d for d in FONT_DIRS if (d / "DejaVuSans.ttf").exists()), None)
        self.unicode = found is not None
        if found is not None:
            self.add_font("Sans", "", str(found / "DejaVuSans.ttf"))
            self.add_font("Sans", "B", str(found / "DejaVuSans-Bold.ttf"))
            self.add_font("Mono", "", str(found / "DejaVuSansMono.ttf"))
            self.sans, self.mono = "Sans", "Mono"
        else:
            self.sans, self.mono = "helvetica", "courier"

    def text_of(self, text: str) -> str:
        """The text as the fonts can write it."""
        return text if self.unicode else text.encode("latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        st = self.st
        self.set_y(-13)
        self.set_font(self.sans, "", 7)
        self.set_text_color(110)
        state = "PROVISIONAL: the period is still open" if st.provisional else "issued bill"
        who = st.account.meter_name or st.account.meter
        self.cell(PAGE_WIDTH * 0.8, 4, self.text_of(f"{who} - account {st.account.account_ref[:12]}... - "
                                                     f"period {st.period_id} - {state}"))
        self.cell(PAGE_WIDTH * 0.2, 4, f"page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(0)

    def heading(self, text: str) -> None:
        """A section's heading, kept with at least a few lines of what follows."""
        if self.will_page_break(24):
            self.add_page()
        self.ln(3)
        self.set_font(self.sans, "B", 11)
        self.cell(0, 7, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(self.sans, "", 9)

    def rows(self, widths: Sequence[float], header: Sequence[str] | None, body: Iterable[Sequence[str]],
             align: str, mono: Sequence[int] = (), bold_last: bool = False, size: float = 8.5,
             mono_size: float = 5.8) -> None:
        """A table of one-line rows; the header (if any) is drawn again at the top of every new page."""
        height = size * 0.55

        def draw(cells: Sequence[str], bold: bool, shade: bool) -> None:
            for i, (text, width) in enumerate(zip(cells, widths, strict=True)):
                if i in mono and not bold:
                    self.set_font(self.mono, "", mono_size)
                else:
                    self.set_font(self.sans, "B" if bold else "", size)
                self.cell(width, height, self.text_of(text), border="B" if bold else 0, align=align[i], fill=shade)
            self.ln(height)

        self.set_fill_color(242, 242, 242)
        if header is not None:
            draw(header, True, False)
        rows = list(body)
        for n, cells in enumerate(rows):
            if self.will_page_break(height):
                self.add_page()
                if header is not None:
                    draw(header, True, False)
            draw(cells, bold_last and n == len(rows) - 1, n % 2 == 1)
        self.set_font(self.sans, "", 9)

    def pairs(self, items: Sequence[tuple[str, str]], label_width: float, x: float, width: float,
              mono_values: Sequence[str] = ()) -> float:
        """Label and value lines at ``x``; returns the y below them."""
        for label, value in items:
            self.set_x(x)
            self.set_font(self.sans, "B", 8.5)
            self.cell(label_width, 4.6, self.text_of(label))
            self.set_font(self.mono if label in mono_values else self.sans, "", 7.2 if label in mono_values else 8.5)
            self.multi_cell(width - label_width, 4.6, self.text_of(value), align="L", new_x=XPos.LMARGIN,
                            new_y=YPos.NEXT)
        return self.get_y()


def to_pdf(st: Statement) -> bytes:
    """The statement as a PDF document."""
    pdf = _Document(st)
    pdf.add_page()
    pdf.set_font(pdf.sans, "B", 18)
    title = "Electricity statement" + (" (provisional)" if st.provisional else "")
    pdf.cell(0, 10, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(pdf.sans, "", 9)
    pdf.cell(0, 5, pdf.text_of(f"Billing period {st.period_id}: {_time(st.period_start, st)} to "
                               f"{_time(st.period_end, st)} (times in {st.timezone})"),
             new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if st.provisional:
        pdf.ln(2)
        pdf.set_fill_color(255, 244, 214)
        pdf.set_font(pdf.sans, "B", 9)
        pdf.multi_cell(0, 5, pdf.text_of(
            f"PROVISIONAL: period {st.period_id} is still open. These are the figures on chain at its last "
            f"reading, {_time(st.period_end, st)}; they change with every reading until the bill is issued."),
            fill=True, border=1, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    elif st.issue is not None:
        pdf.ln(1)
        pdf.set_font(pdf.sans, "", 8.5)
        pdf.cell(0, 4.6, pdf.text_of(f"Bill issued on chain at {_time(st.issue.at, st)} in transaction"),
                 new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(pdf.mono, "", 7.5)
        pdf.cell(0, 4.2, st.issue.tx_hash, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    top = pdf.get_y()
    holder = [("Account holder", st.account.customer_name or "(no name on record)"),
              ("Address", st.account.postal_address or "(no address on record)")]
    left = pdf.pairs(holder, 28, 14, 70)
    pdf.set_y(top)
    meter = f"{st.account.meter_name} ({st.account.meter})" if st.account.meter_name else st.account.meter
    account = [("Account reference", st.account.account_ref), ("Meter", meter), ("Region", st.account.region),
               ("Contract", f"{st.chain.contract} on chain {st.chain.chain_id}"),
               ("Drawn up", f"{_time(st.drawn_up_at, st)}")]
    right = pdf.pairs(account, 32, 90, PAGE_WIDTH - 76, mono_values=("Account reference", "Meter", "Contract"))
    pdf.set_y(max(left, right))

    pdf.heading("Your bill")
    days = (st.period_end - st.period_start) / 86_400
    lines = [[f"Energy charge: {format_kwh(st.import_wh)} imported", format_pounds(st.energy_charge)],
             [f"Standing charge: {days:.2f} days", format_pounds(st.standing_charge)]]
    lines += [[c.description, "-" + format_pounds(c.amount)] for c in st.credits]
    due = "Amount due" + (" (in credit)" if st.in_credit else "") + (" so far" if st.provisional else "")
    lines.append([due, format_pounds(st.amount_due)])
    pdf.rows([140, 42], None, lines, "LR", bold_last=True, size=9.5)

    pdf.heading("Registers")
    pdf.rows([46, 45, 45, 46], ["Register", "At the start", "At the end", "Used in the period"],
             [["Import", format_kwh(st.opening_import_wh), format_kwh(st.closing_import_wh), format_kwh(st.import_wh)],
              ["Export", format_kwh(st.opening_export_wh), format_kwh(st.closing_export_wh),
               format_kwh(st.export_wh)]], "LRRR")

    pdf.heading("Tariffs in force")
    for t in st.tariffs:
        pdf.set_font(pdf.sans, "B", 8.5)
        pdf.multi_cell(0, 4.6, pdf.text_of(
            f"Version {t.version}: {_time(t.start, st)} to {_time(t.end, st)} ({_duration(t.end - t.start)}); "
            f"standing charge {format_pence(t.standing_charge)} a day" + (f"; bands in {t.clock}" if t.clock else "")),
            align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(pdf.sans, "", 8.5)
        pdf.multi_cell(0, 4.6, pdf.text_of(f"Import: {t.import_pricing}.  Export: {t.export_pricing}."),
                       align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.heading(f"Consumption by day ({st.timezone})")
    body = [[d.day.strftime("%a %d %b %Y"), format_kwh(d.import_wh), format_pounds(d.import_cost),
             format_kwh(d.export_wh), format_pounds(d.export_credit)] for d in st.days]
    body.append(["Total", format_kwh(st.import_wh), format_pounds(st.energy_charge), format_kwh(st.export_wh),
                 format_pounds(sum(d.export_credit for d in st.days))])
    pdf.rows([42, 35, 35, 35, 35], ["Day", "Imported", "Energy charge", "Exported", "Export credit"], body,
             "LRRRR", bold_last=True)

    pdf.add_page()
    pdf.heading(f"Appendix: the {len(st.readings):,} readings of period {st.period_id} on chain")
    pdf.set_font(pdf.sans, "", 8)
    pdf.multi_cell(0, 4.2, pdf.text_of(
        f"Each line is a ReadingRecorded event of contract {st.chain.contract} on chain {st.chain.chain_id}: look it "
        "up by its transaction hash or block. Registers and energy in Wh; the energy is the register's rise since "
        "the reading before."), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)
    readings = ([str(r.seq) if r.source == "meter" else "final", _time(r.timestamp, st),
                 f"{r.import_register_wh:,}", f"{r.import_wh:,}",
                 f"{r.export_register_wh:,}", f"{r.export_wh:,}", str(r.block), r.tx_hash] for r in st.readings)
    pdf.rows([10, 24, 18, 12, 16, 11, 10, 81], ["Seq", "Time", "Import reg.", "Import", "Export reg.", "Export",
                                                "Block", "Transaction hash"], readings, "RLRRRRRL", mono=(7,),
             size=6.4)
    if not st.readings:
        pdf.cell(0, 5, "No reading was recorded in this period yet.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if st.restarts:
        pdf.ln(2)
        pdf.heading("Meter exchanges and register resets")
        pdf.set_font(pdf.sans, "", 8)
        pdf.multi_cell(0, 4.2, pdf.text_of(
            "The operator closed the register with a final read (the reading line of the same time, or the reading "
            "before when none is listed); the registers then read anew, and the bill went on."), align="L",
            new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1)
        pdf.rows([22, 24, 62, 18, 18, 10, 34], ["Change", "Time", "Meter from then on", "Import reg.", "Export reg.",
                                               "Block", "Transaction"],
                 ([_RESTART_NAMES[c.kind], _time(c.at, st), c.meter, f"{c.import_register_wh:,}",
                   f"{c.export_register_wh:,}", str(c.block), c.tx_hash[:18] + "..."] for c in st.restarts),
                 "LLLRRRL", mono=(2, 6), size=6.4)
    return bytes(pdf.output())


#: How the statement names a restart's kind.
_RESTART_NAMES = {"exchange": "Meter exchange", "reset": "Register reset"}


# ---------------------------------------------------------------- CSV


def to_csv(st: Statement) -> str:
    """The statement as CSV sections in the project's integer units (see the module's docstring)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    a = st.account
    w.writerow(["section", "field", "value"])
    summary: list[tuple[str, object]] = [
        ("status", st.status.value), ("account_ref", a.account_ref), ("meter", a.meter),
        ("meter_name", _text(a.meter_name or "")), ("customer_name", _text(a.customer_name)),
        ("postal_address", _text(a.postal_address)), ("region", _text(a.region)), ("chain_id", st.chain.chain_id),
        ("contract", st.chain.contract), ("period_id", st.period_id), ("period_start", st.period_start),
        ("period_start_local", _iso(st.period_start, st)),
        ("period_end", st.period_end), ("period_end_local", _iso(st.period_end, st)), ("timezone", st.timezone),
        ("opening_import_register_wh", st.opening_import_wh), ("closing_import_register_wh", st.closing_import_wh),
        ("opening_export_register_wh", st.opening_export_wh), ("closing_export_register_wh", st.closing_export_wh),
        ("import_wh", st.import_wh), ("export_wh", st.export_wh),
        ("energy_charge_micropence", st.energy_charge), ("standing_charge_micropence", st.standing_charge),
        ("credits_micropence", st.total_credits), ("amount_due_micropence", st.amount_due),
        ("amount_due", format_pounds(st.amount_due)),
        ("issued_tx", st.issue.tx_hash if st.issue else ""), ("issued_at", st.issue.at if st.issue else ""),
        ("drawn_up_at", st.drawn_up_at),
    ]
    w.writerows(["summary", k, v] for k, v in summary)
    w.writerow([])
    w.writerow(["section", "kind", "description", "amount_micropence"])
    w.writerows(["credit", c.kind, c.description, c.amount] for c in st.credits)
    w.writerow([])
    w.writerow(["section", "version", "effective_from", "start", "end", "standing_charge_millipence_per_day",
                "import_pricing", "export_pricing", "band_clock"])
    w.writerows(["tariff", t.version, t.effective_from, t.start, t.end, t.standing_charge, t.import_pricing,
                 t.export_pricing, t.clock] for t in st.tariffs)
    w.writerow([])
    w.writerow(["section", "date", "import_wh", "export_wh", "import_cost_micropence", "export_credit_micropence"])
    w.writerows(["day", d.day.isoformat(), d.import_wh, d.export_wh, d.import_cost, d.export_credit] for d in st.days)
    w.writerow([])
    w.writerow(["section", "seq", "timestamp", "time_local", "import_register_wh", "export_register_wh", "import_wh",
                "export_wh", "block", "tx_hash"])
    w.writerows(["reading", r.seq, r.timestamp, _iso(r.timestamp, st), r.import_register_wh, r.export_register_wh,
                 r.import_wh, r.export_wh, r.block, r.tx_hash]
                + ([] if r.source == "meter" else [f"final_read_{r.source}"]) for r in st.readings)
    if st.restarts:
        w.writerow([])
        w.writerow(["section", "kind", "at", "time_local", "meter", "import_register_wh", "export_register_wh", "block",
                    "tx_hash"])
        w.writerows(["restart", c.kind, c.at, _iso(c.at, st), c.meter, c.import_register_wh, c.export_register_wh,
                     c.block, c.tx_hash] for c in st.restarts)
    return out.getvalue()
