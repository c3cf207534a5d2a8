"""The operator's off-chain customer records (``DATA_DIR/customers.json``): one definition.

A record holds the personal details the chain never sees (name, postal address, e-mail), the
meter it belongs to and the account's API key. Provisioning and ``meterctl register`` write
the file (``load_customers`` / ``save_customers``); the API and statements read it through
``Customers``, which reloads it when it changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Customer", "Customers", "load_customers", "save_customers"]


@dataclass(frozen=True)
class Customer:
    """One account: its meter and its holder's details."""

    meter: str
    meter_name: str
    account_ref: str
    name: str
    address: str
    email: str
    api_key: str
    region: str = ""
    archetype: str = ""

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Customer:
        """A record read from the file (fields it does not know are ignored, missing ones are empty)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: str(v) for k, v in record.items() if k in fields}
        for required in ("meter", "meter_name", "account_ref", "name", "address", "email", "api_key"):
            values.setdefault(required, "")
        return cls(**values)

    def to_json(self) -> dict[str, str]:
        """The record as the file holds it."""
        return dataclasses.asdict(self)


def load_customers(path: Path) -> dict[str, Customer]:
    """The customer file's records keyed by lower-case meter address (empty if there is no file)."""
    if not path.exists():
        return {}
    records = [Customer.from_json(r) for r in json.loads(path.read_text()).get("customers", [])]
    return {c.meter.lower(): c for c in records}


def save_customers(path: Path, customers: dict[str, Customer]) -> None:
    """Write the customer file atomically, readable by its owner only, sorted by meter name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    ordered = sorted(customers.values(), key=lambda c: c.meter_name)
    tmp.write_text(json.dumps({"customers": [c.to_json() for c in ordered]}, indent=2) + "\n")
    tmp.replace(path)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Customers:
    """The customer file, read-only, indexed by meter and by API key (hashed, so look-ups take the same time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._by_meter: dict[str, Customer] = {}
        self._by_key: dict[bytes, Customer] = {}

    def _refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._mtime, self._by_meter, self._by_key = None, {}, {}
            return
        if mtime == self._mtime:
            return
        self._by_meter = load_customers(self.path)
        self._by_key = {_digest(c.api_key): c for c in self._by_meter.values() if c.api_key}
        self._mtime = mtime

    def by_meter(self, meter: str) -> Customer | None:
        """The customer whose meter this is."""
        self._refresh()
        return self._by_meter.get(meter.lower())

    def by_api_key(self, key: str) -> Customer | None:
        """The customer holding this API key."""
        self._refresh()
        return self._by_key.get(_digest(key))
