"""One customer record: written by provisioning and meterctl, read by the API, the same fields both ways."""

from __future__ import annotations

import json
import os
from pathlib import Path

from common.customers import Customer, Customers, load_customers, save_customers


def customer(n: int) -> Customer:
    return Customer(meter=f"0x{n:040x}", meter_name=f"meter-{n:02d}", account_ref="0x" + "ab" * 32,
                    name=f"Person {n}", address=f"{n} High Street", email=f"p{n}@example.org", api_key=f"key-{n}",
                    region="north")


def test_records_survive_a_save_and_load_unchanged_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "customers.json"
    records = {c.meter.lower(): c for c in (customer(2), customer(1))}
    save_customers(path, records)
    assert load_customers(path) == records
    assert [r["meter_name"] for r in json.loads(path.read_text())["customers"]] == ["meter-01", "meter-02"]
    assert os.stat(path).st_mode & 0o077 == 0


def test_the_reader_finds_by_meter_and_api_key_and_sees_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "customers.json"
    save_customers(path, {customer(1).meter: customer(1)})
    reader = Customers(path)
    assert reader.by_api_key("key-1") == customer(1)
    assert reader.by_meter(customer(1).meter.upper().replace("0X", "0x")) == customer(1)
    save_customers(path, {customer(3).meter: customer(3)})
    os.utime(path, (1, 1))  # a new mtime even within the file system's clock tick
    assert reader.by_api_key("key-1") is None and reader.by_api_key("key-3") == customer(3)


def test_a_record_with_unknown_or_missing_fields_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "customers.json"
    path.write_text(json.dumps({"customers": [{"meter": "0x" + "1" * 40, "meter_name": "old", "extra": 5}]}))
    record = load_customers(path)["0x" + "1" * 40]
    assert (record.meter_name, record.api_key, record.region) == ("old", "", "")
