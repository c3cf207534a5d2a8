"""Typed, synchronous access to the billing contract for scripts, tools and tests.

Wraps the contract's functions and views in named Python types, so callers never index into
raw tuples. The server's asyncio code reads the same views through ``AsyncChainClient``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from eth_utils import to_checksum_address

from common.chain import ChainClient
from common.deployment import Deployment
from common.eip712 import ReadingData
from common.messages import BillState, TariffInfo

__all__ = [
    "MeterView",
    "Billing",
    "text32",
    "from_text32",
    "decode_bill",
    "decode_meter",
]


REGISTRATIONS_PER_TX = 100
#: Gas bound per registration in a batch (measured ~115k: four new storage slots and an event).
REGISTRATION_GAS = 140_000


def text32(text: str) -> bytes:
    """Encode short text (at most 32 bytes of UTF-8) as a right-padded bytes32."""
    raw = text.encode()
    if len(raw) > 32:
        raise ValueError(f"{text!r} is longer than 32 bytes")
    return raw.ljust(32, b"\0")


def from_text32(raw: bytes) -> str:
    """Decode a right-padded bytes32 back into text."""
    return bytes(raw).rstrip(b"\0").decode(errors="replace")


@dataclass(frozen=True)
class MeterView:
    """A meter's registration and reading state as the contract holds it."""

    address: str
    registered: bool
    active: bool
    account_ref: str
    region: str
    last_seq: int
    last_timestamp: int
    last_energy_wh: int


def decode_meter(address: str, raw: Sequence[Any]) -> MeterView:
    """Build a MeterView from the ``meterState`` view's return tuple."""
    registered, active, account_ref, region, last_seq, last_ts, last_wh = raw
    return MeterView(
        to_checksum_address(address),
        bool(registered),
        bool(active),
        "0x" + bytes(account_ref).hex(),
        from_text32(region),
        int(last_seq),
        int(last_ts),
        int(last_wh),
    )


def decode_bill(raw: Sequence[Any]) -> BillState:
    """Build a BillState from the ``openBill`` view's return tuple."""
    period_id, start, _end, energy, cost, standing, due = raw
    return BillState(
        period_id=int(period_id),
        period_start=int(start),
        period_energy_wh=int(energy),
        energy_cost=int(cost),
        standing_charge=int(standing),
        amount_due=int(due),
    )


class Billing:
    """The contract, seen through one ChainClient, with one method per operation."""

    def __init__(self, client: ChainClient, deployment: Deployment) -> None:
        self.client = client
        self.deployment = deployment
        self.contract = client.contract(deployment)
        self.settings = client.settings

    # views
    def meter(self, address: str) -> MeterView:
        """The meter's on-chain state."""
        return decode_meter(address, self.contract.functions.meterState(to_checksum_address(address)).call())

    def bill(self, address: str) -> BillState:
        """The meter's open billing period."""
        return decode_bill(self.contract.functions.openBill(to_checksum_address(address)).call())

    def tariff(self) -> TariffInfo:
        """The tariff in force."""
        unit_rate, standing, _from, version = self.contract.functions.tariff().call()
        return TariffInfo(unit_rate=int(unit_rate), standing_charge=int(standing), version=int(version))

    def meters(self) -> list[str]:
        """Every meter ever registered, in registration order."""
        count = self.contract.functions.meterCount().call()
        return [self.contract.functions.meterAt(i).call() for i in range(count)]

    # operator
    def register_meter(
        self, address: str, account_ref: bytes, region: str, opening_wh: int, opened_at: int = 0, wait: bool = True
    ) -> Any:
        """Register a meter (operator key)."""
        call = self.contract.functions.registerMeter(
            to_checksum_address(address), account_ref, text32(region), opening_wh, opened_at
        )
        return self.client.transact(self.settings.operator_key, call, wait=wait)

    def register_meters(
        self, entries: Sequence[tuple[str, bytes, str, int]], opened_at: int = 0, wait: bool = True
    ) -> list[Any]:
        """Register many meters, 100 a transaction; entries are (address, accountRef, region, openingWh).

        A registration writes about 115k gas of new storage, so 100 a transaction stays well below
        the 30M block gas limit.
        """
        receipts = []
        for i in range(0, len(entries), REGISTRATIONS_PER_TX):
            chunk = entries[i:i + REGISTRATIONS_PER_TX]
            call = self.contract.functions.registerMeters(
                [to_checksum_address(a) for a, _, _, _ in chunk],
                [ref for _, ref, _, _ in chunk],
                [text32(region) for _, _, region, _ in chunk],
                [wh for _, _, _, wh in chunk],
                opened_at,
            )
            gas = REGISTRATION_GAS * len(chunk) + 100_000
            receipts.append(self.client.transact(self.settings.operator_key, call, gas=gas, wait=wait))
        return receipts

    def deactivate_meter(self, address: str) -> Any:
        """Deactivate a meter (operator key)."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.deactivateMeter(address))

    def reactivate_meter(self, address: str) -> Any:
        """Reactivate a meter (operator key)."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.reactivateMeter(address))

    def set_tariff(self, unit_rate: int, standing_charge: int) -> Any:
        """Set the tariff (operator key)."""
        call = self.contract.functions.setTariff(unit_rate, standing_charge)
        return self.client.transact(self.settings.operator_key, call)

    def close_billing_period(self, address: str) -> Any:
        """Close a meter's billing period and issue its bill (operator key)."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.closeBillingPeriod(address))

    # gateway
    def submit_readings(self, signed: Sequence[tuple[ReadingData, str]], wait: bool = True) -> Any:
        """Submit meter-signed readings in one batch (gateway key)."""
        readings = [(to_checksum_address(r.meter), r.seq, r.timestamp, r.energy_wh) for r, _ in signed]
        sigs = [bytes.fromhex(s.removeprefix("0x")) for _, s in signed]
        return self.client.transact(
            self.settings.gateway_key, self.contract.functions.submitReadings(readings, sigs), wait=wait
        )

    # grid operator
    def raise_grid_alert(
        self, severity: int, kind: str, region: str, message: str, expires_at: int
    ) -> Any:
        """Raise a grid alert (grid operator key)."""
        call = self.contract.functions.raiseGridAlert(severity, text32(kind), text32(region), message, expires_at)
        return self.client.transact(self.settings.grid_operator_key, call)

    def clear_grid_alert(self, alert_id: int) -> Any:
        """Clear a grid alert (grid operator key)."""
        return self.client.transact(self.settings.grid_operator_key, self.contract.functions.clearGridAlert(alert_id))

    def events(self, name: str, receipt: Any) -> list[Any]:
        """Decode the named event's logs from a receipt (other events are skipped quietly)."""
        from web3.logs import DISCARD

        return list(getattr(self.contract.events, name)().process_receipt(receipt, errors=DISCARD))
