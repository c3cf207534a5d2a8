"""The operator's off-chain customer records (``DATA_DIR/customers.json``), read-only here.

Provisioning and ``scripts/meterctl.py register`` write the file; the API and the statement
read it, reloading when it changes. A record holds the personal details the chain never
sees (name, postal address, e-mail), the meter it belongs to and the account's API key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Customer", "Customers"]


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


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Customers:
    """The customer file, indexed by meter and by API key (hashed, so look-ups take the same time)."""

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
        records = json.loads(self.path.read_text()).get("customers", [])
        fields = set(Customer.__dataclass_fields__)
        customers = [Customer(**{k: str(v) for k, v in r.items() if k in fields}) for r in records]
        self._by_meter = {c.meter.lower(): c for c in customers}
        self._by_key = {_digest(c.api_key): c for c in customers if c.api_key}
        self._mtime = mtime

    def by_meter(self, meter: str) -> Customer | None:
        """The customer whose meter this is."""
        self._refresh()
        return self._by_meter.get(meter.lower())

    def by_api_key(self, key: str) -> Customer | None:
        """The customer holding this API key."""
        self._refresh()
        return self._by_key.get(_digest(key))
