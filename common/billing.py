"""Typed, synchronous access to the billing contract for scripts, tools and tests.

Wraps the contract's functions and views in named Python types, so callers never index into
raw tuples. The server's asyncio code reads the same views through ``AsyncChainClient``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from eth_utils import to_checksum_address

from common.batches import pack_reading
from common.chain import ChainClient
from common.deployment import Deployment
from common.eip712 import ReadingData
from common.events import unpack_record
from common.messages import BillState, TariffInfo
from common.tariff import PERIOD_SECONDS, ClockTable, Schedule, TariffVersion

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
    last_export_wh: int = 0


def decode_meter(address: str, raw: Sequence[Any]) -> MeterView:
    """Build a MeterView from the ``meterState`` view's return tuple."""
    registered, active, account_ref, region, last_seq, last_ts, last_wh, last_export = raw
    return MeterView(
        to_checksum_address(address),
        bool(registered),
        bool(active),
        "0x" + bytes(account_ref).hex(),
        from_text32(region),
        int(last_seq),
        int(last_ts),
        int(last_wh),
        int(last_export),
    )


def decode_bill(raw: Sequence[Any]) -> BillState:
    """Build a BillState from the ``openBill`` view's return tuple."""
    period_id, start, _end, imported, exported, cost, credit, standing, due = raw
    return BillState(
        period_id=int(period_id),
        period_start=int(start),
        period_energy_wh=int(imported),
        period_export_wh=int(exported),
        energy_cost=int(cost),
        export_credit=int(credit),
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

    def now(self) -> int:
        """The latest block's timestamp."""
        return int(self.client.w3.eth.get_block("latest")["timestamp"])

    def tariff(self, at: int | None = None) -> TariffInfo:
        """The tariff in force at ``at`` (default: the latest block's time), with its prices then."""
        at = self.now() if at is None else at
        fn = self.contract.functions
        version = int(fn.tariffVersionAt(at).call())
        spec = TariffVersion.from_struct(fn.tariffVersion(version).call())
        import_price, export_price = fn.pricesAt(at).call()
        return TariffInfo(unit_rate=int(import_price), export_rate=int(export_price),
                          standing_charge=spec.standing_charge, version=version)

    def versions(self) -> list[TariffVersion]:
        """Every tariff version, oldest first (the newest may not be in force yet)."""
        fn = self.contract.functions
        return [TariffVersion.from_struct(fn.tariffVersion(v).call()) for v in range(1, fn.tariffCount().call() + 1)]

    def schedule(self) -> Schedule:
        """Everything that prices a period, read from the chain: versions, clock changes, day-ahead prices."""
        events = self.contract.events
        start = self.deployment.block
        logged = [(e.blockNumber, e.logIndex, 1, int(e.args.at), int(e.args.offsetMinutes))
                  for e in events.ClockChangeAdded().get_logs(from_block=start)]
        logged += [(e.blockNumber, e.logIndex, 0, int(e.args.at), 0)
                   for e in events.ClockChangeWithdrawn().get_logs(from_block=start)]
        clock = ClockTable()
        for _, _, added, at, minutes in sorted(logged):
            clock = clock.with_changes([(at, minutes)]) if added else clock.without(at)
        schedule = Schedule(self.versions(), clock)
        for e in events.DayAheadPricesPublished().get_logs(from_block=start):
            schedule.publish(int(e.args["from"]) // PERIOD_SECONDS, e.args.importPrices, e.args.exportPrices)
        return schedule

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

    def _holds(self, role: bytes, address: str) -> bool:
        return bool(self.contract.functions.hasRole(role, to_checksum_address(address)).call())

    def is_gateway(self, address: str) -> bool:
        """Whether ``address`` holds GATEWAY_ROLE (may submit readings)."""
        return self._holds(self.contract.functions.GATEWAY_ROLE().call(), address)

    def gateways(self) -> list[str]:
        """The addresses holding GATEWAY_ROLE now, from the role events since the deployment block."""
        role = self.contract.functions.GATEWAY_ROLE().call()
        ever: set[str] = set()
        for name in ("RoleGranted", "RoleRevoked"):
            for log in getattr(self.contract.events, name)().get_logs(from_block=self.deployment.block):
                if log["args"]["role"] == role:
                    ever.add(log["args"]["account"])
        return sorted(a for a in ever if self._holds(role, a))

    def set_gateway(self, address: str, allowed: bool) -> Any:
        """Grant or revoke GATEWAY_ROLE (admin key): another gateway deployment may submit readings, or no more."""
        role = self.contract.functions.GATEWAY_ROLE().call()
        call = (self.contract.functions.grantRole if allowed else self.contract.functions.revokeRole)(
            role, to_checksum_address(address))
        return self.client.transact(self.settings.admin_key, call)

    def deactivate_meter(self, address: str) -> Any:
        """Deactivate a meter (operator key)."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.deactivateMeter(address))

    def reactivate_meter(self, address: str) -> Any:
        """Reactivate a meter (operator key)."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.reactivateMeter(address))

    def exchange_meter(self, address: str, new_address: str, final_import_wh: int, final_export_wh: int,
                       final_read_at: int, opening_import_wh: int = 0, opening_export_wh: int = 0) -> Any:
        """Exchange a meter (operator key): ``new_address`` takes over its account and open period after the
        old meter's final read; the old address is retired."""
        call = self.contract.functions.exchangeMeter(
            to_checksum_address(address), to_checksum_address(new_address), final_import_wh, final_export_wh,
            final_read_at, opening_import_wh, opening_export_wh)
        return self.client.transact(self.settings.operator_key, call)

    def reset_register(self, address: str, final_import_wh: int, final_export_wh: int, final_read_at: int,
                       import_wh: int = 0, export_wh: int = 0) -> Any:
        """Reset a meter's register and sequence after its final read (operator key); its open period goes on."""
        call = self.contract.functions.resetRegister(
            to_checksum_address(address), final_import_wh, final_export_wh, final_read_at, import_wh, export_wh)
        return self.client.transact(self.settings.operator_key, call)

    def set_tariff(self, version: TariffVersion) -> Any:
        """Add a tariff version (operator key); ``effective_from`` 0 means the next period it may start."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.setTariff(version.as_struct()))

    def set_flat_tariff(self, unit_rate: int, standing_charge: int, effective_from: int = 0) -> Any:
        """Add a flat import tariff without export payments (operator key)."""
        return self.set_tariff(TariffVersion.flat(unit_rate, standing_charge, effective_from))

    def withdraw_tariff(self, version: int) -> Any:
        """Withdraw the newest tariff version before it takes effect (operator key)."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.withdrawTariff(version))

    def withdraw_clock_change(self, at: int) -> Any:
        """Withdraw the last published clock change before it takes effect (operator key)."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.withdrawClockChange(at))

    def publish_day_ahead(self, start: int, import_prices: Sequence[int], export_prices: Sequence[int] = ()) -> Any:
        """Publish day-ahead prices for consecutive periods from ``start`` (operator key)."""
        call = self.contract.functions.publishDayAheadPrices(start, list(import_prices), list(export_prices))
        return self.client.transact(self.settings.operator_key, call)

    def close_billing_period(self, address: str) -> Any:
        """Close a meter's billing period and issue its bill (operator key)."""
        return self.client.transact(self.settings.operator_key, self.contract.functions.closeBillingPeriod(address))

    # gateway
    def submit_readings(self, signed: Sequence[tuple[ReadingData, str]], wait: bool = True) -> Any:
        """Submit meter-signed readings in one packed batch (gateway key; the node estimates the gas)."""
        batch = b"".join(pack_reading(r, s) for r, s in signed)
        return self.client.transact(self.settings.gateway_key, self.contract.functions.submitReadings(batch),
                                    wait=wait)

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
        """Decode the named event's logs from a receipt (other events are skipped quietly); a
        ``ReadingRecorded`` event's ``record`` is unpacked into its named fields beside it."""
        from web3.datastructures import AttributeDict
        from web3.logs import DISCARD

        found = list(getattr(self.contract.events, name)().process_receipt(receipt, errors=DISCARD))
        if name != "ReadingRecorded":
            return found
        return [AttributeDict({**e, "args": AttributeDict({**e.args, **unpack_record(int(e.args.record))})})
                for e in found]
