"""Tariff files for the operator: a tariff version in JSON, day-ahead period prices in CSV or JSON.

Pure parsing into ``common.tariff`` types (no chain access): ``scripts/meterctl.py tariff``
reads the files with these, ``operations.control`` sends the result. Prices in the files are
pence (per kWh, per day) with at most three decimals; times are local (the ``TIMEZONE``
setting) unless they carry an offset. A tariff version:

    {"standing_charge": 57.21, "clock": "local", "effective_from": "2026-12-05 00:00",
     "import": {"kind": "banded", "otherwise": {"name": "day", "rate": 24.67},
                "bands": [{"name": "off-peak", "from": "00:30", "to": "05:30", "rate": 8.5},
                          {"name": "peak", "from": "16:00", "to": "19:00", "rate": 35}]},
     "export": {"kind": "flat", "rate": 15}}

``kind`` is ``flat`` (``rate``), ``banded`` (``bands`` in the day's local half hours, ``otherwise``
for the rest; at most 8 bands) or ``day_ahead`` (``fallback``: the price of a period not
published). ``clock`` is ``local`` (UK clock time) or ``gmt`` (all year, as Economy 7).
``effective_from`` may be left out: the next settlement period the contract allows.

Day-ahead prices, consecutive half hours from the first row's start (a local day has 46, 48
or 50), as CSV ``start,import,export`` (export may be empty) or JSON
``{"start": "2026-12-05 00:00", "import": [..], "export": [..]}``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common.errors import InvalidRequest
from common.tariff import (
    CLOCK_GMT,
    CLOCK_LOCAL,
    MAX_PRICE,
    PERIOD_SECONDS,
    PriceRule,
    TariffVersion,
)

__all__ = ["pence", "parse_time", "parse_version", "load_version", "load_prices", "band_names"]

_KINDS = ("flat", "banded", "day_ahead")


def pence(value: Any, what: str, allow_zero: bool = True) -> int:
    """Pence (a number or text, at most 3 decimals) as millipence; refuses anything else."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest(f"{what} must be a number of pence, not {value!r}") from None
    milli = amount * 1000
    if milli != milli.to_integral_value() or milli < 0 or milli > MAX_PRICE or (milli == 0 and not allow_zero):
        raise InvalidRequest(f"{what} must be pence with at most 3 decimals, {'0' if allow_zero else 'above 0'} "
                             f"to {MAX_PRICE / 1000:,.3f}, not {value!r}")
    return int(milli)


def parse_time(text: str | int, tz: ZoneInfo) -> int:
    """A time as unix seconds: unix seconds, or ISO 8601 (local in ``tz`` unless it has an offset)."""
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(str(text))
    except ValueError:
        raise InvalidRequest(f"{text!r} is not a time: give e.g. 2026-12-05 00:00 (local) or unix seconds") from None
    return int((when if when.tzinfo else when.replace(tzinfo=tz)).timestamp())


def _half_hour(text: str, what: str) -> int:
    try:
        hours, minutes = (int(x) for x in str(text).split(":"))
    except ValueError:
        raise InvalidRequest(f"{what} must be a time of day like 16:30, not {text!r}") from None
    if minutes not in (0, 30) or not 0 <= hours <= 24 or (hours == 24 and minutes):
        raise InvalidRequest(f"{what} must be on the hour or half hour, 00:00 to 24:00, not {text!r}")
    return hours * 2 + minutes // 30


def _rule(data: Any, side: str) -> tuple[PriceRule, dict[int, str]]:
    if not isinstance(data, dict) or data.get("kind") not in _KINDS:
        raise InvalidRequest(f"{side}: give an object with kind flat, banded or day_ahead")
    kind = data["kind"]
    if kind == "flat":
        return PriceRule.flat(pence(data.get("rate"), f"{side} rate", allow_zero=side == "export")), {}
    if kind == "day_ahead":
        return PriceRule.day_ahead(pence(data.get("fallback"), f"{side} fallback", allow_zero=side == "export")), {}
    otherwise = data.get("otherwise")
    bands = data.get("bands")
    if not isinstance(otherwise, dict) or not isinstance(bands, list) or not bands or len(bands) > 7:
        raise InvalidRequest(f"{side}: a banded tariff has 1-7 'bands' and an 'otherwise' band")
    table = [0] * 48
    rates = [pence(otherwise.get("rate"), f"{side} otherwise rate")]
    names = {0: str(otherwise.get("name", "otherwise"))}
    for number, band in enumerate(bands, start=1):
        start, end = _half_hour(band.get("from"), f"{side} band from"), _half_hour(band.get("to"), f"{side} band to")
        rates.append(pence(band.get("rate"), f"{side} band rate"))
        names[number] = str(band.get("name", f"band {number}"))
        hours = range(start, end) if start < end else [*range(start, 48), *range(0, end)]  # may wrap midnight
        for h in hours:
            if table[h]:
                raise InvalidRequest(f"{side}: bands {names[table[h]]} and {names[number]} overlap")
            table[h] = number
    return PriceRule.banded(table, rates), names


def parse_version(data: Any, tz: ZoneInfo) -> tuple[TariffVersion, dict[str, dict[int, str]]]:
    """A tariff version from its JSON form; also the band names of each side (for showing)."""
    if not isinstance(data, dict):
        raise InvalidRequest("a tariff file holds one JSON object")
    clock = {"local": CLOCK_LOCAL, "gmt": CLOCK_GMT}.get(str(data.get("clock", "local")))
    if clock is None:
        raise InvalidRequest("clock must be 'local' (UK clock time) or 'gmt' (all year)")
    start = parse_time(data["effective_from"], tz) if data.get("effective_from") else 0
    if start % PERIOD_SECONDS:
        raise InvalidRequest("effective_from must be on the hour or half hour")
    import_rule, import_names = _rule(data.get("import"), "import")
    export_rule, export_names = _rule(data.get("export", {"kind": "flat", "rate": 0}), "export")
    version = TariffVersion(start, pence(data.get("standing_charge"), "standing_charge"), import_rule, export_rule,
                            clock)
    return version, {"import": import_names, "export": export_names}


def load_version(path: Path, tz: ZoneInfo) -> tuple[TariffVersion, dict[str, dict[int, str]]]:
    """Read a tariff version file (JSON)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InvalidRequest(f"cannot read the tariff file {path}: {err}") from None
    return parse_version(data, tz)


def load_prices(path: Path, tz: ZoneInfo) -> tuple[int, list[int], list[int]]:
    """Read day-ahead prices (CSV or JSON): (first period's start, import prices, export prices)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise InvalidRequest(f"cannot read the prices file {path}: {err}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise InvalidRequest(f"{path} is not JSON: {err}") from None
        start = parse_time(data["start"], tz)
        imports = [pence(p, "import price") for p in data.get("import", [])]
        exports = [pence(p, "export price") for p in data.get("export", [])]
    else:
        rows = [r for r in csv.DictReader(text.splitlines()) if any(r.values())]
        if not rows or "start" not in rows[0] or "import" not in rows[0]:
            raise InvalidRequest(f"{path}: a prices CSV has the columns start,import[,export]")
        times = [parse_time(r["start"], tz) for r in rows]
        start = times[0]
        if any(b - a != PERIOD_SECONDS for a, b in zip(times, times[1:], strict=False)):
            raise InvalidRequest(f"{path}: rows must be consecutive half hours")
        imports = [pence(r["import"], "import price") for r in rows if r.get("import")]
        exports = [pence(r["export"], "export price") for r in rows if r.get("export")]
    if start % PERIOD_SECONDS:
        raise InvalidRequest("prices start on the hour or half hour")
    if not imports and not exports:
        raise InvalidRequest(f"{path} holds no prices")
    return start, imports, exports


def band_names(rule: PriceRule) -> dict[int, str]:
    """Default names of a banded rule's bands, cheapest first: off-peak, day, peak, ..."""
    used = sorted(set(rule.bands), key=lambda b: rule.band_rates[b])
    words = ["off-peak", "day", "peak"] if len(used) == 3 else ["off-peak", "peak"] if len(used) == 2 else []
    return {b: (words[i] if i < len(words) else f"band {b}") for i, b in enumerate(used)}


def agile_like_prices(day_start: int, tz: ZoneInfo, seed: int = 0) -> tuple[list[int], list[int]]:
    """Day-ahead import and export prices (millipence per kWh) for the local day from ``day_start``
    (its 46, 48 or 50 half hours), shaped like Octopus Agile and Agile Outgoing: cheap overnight,
    dearest from 16:00 to 19:00, export about 55% of import; a little noise drawn from ``seed``."""
    import random

    rng = random.Random(f"{seed}:{day_start}")
    day = dt.datetime.fromtimestamp(day_start, tz).date()
    end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz).timestamp())
    imports, exports = [], []
    for t in range(day_start, end, PERIOD_SECONDS):
        local = dt.datetime.fromtimestamp(t, tz)
        hour = local.hour + local.minute / 60
        base = 12.0 if hour < 6 else 38.0 if 16 <= hour < 19 else 27.0 if 7 <= hour < 10 else 22.0
        pence = max(0.0, base * rng.uniform(0.85, 1.15))
        imports.append(round(pence * 1000))
        exports.append(round(pence * 550))
    return imports, exports
