"""Provision a fleet of meters: keys, household archetypes, off-chain customer records,
registration on chain and an existing history of signed half-hourly readings.

Idempotent: a meter already registered on the current deployment is left alone; a meter
whose key exists but which the chain does not know (the chain was reset) is registered again
with a fresh history. Customer details (name, address, e-mail) are written only to
``DATA_DIR/customers.json``; the chain holds the meter address and an opaque account reference.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from common.batches import extra_periods, gas_limit_for, pack_reading
from common.billing import Billing
from common.chain import ChainClient
from common.customers import Customer, load_customers, save_customers
from common.deployment import load_deployment
from common.eip712 import ReadingData, sign_reading
from common.logs import log_event
from common.settings import Settings
from meters.household import household_history
from meters.identity import MeterIdentity, meter_dir
from meters.lock import MeterLock
from meters.outbox import MeterPosition, Outbox

__all__ = ["provision", "ProvisionReport", "REGIONS", "ARCHETYPE_CYCLE"]

log = logging.getLogger("provision")

REGIONS = ("north", "south", "east", "west")
ARCHETYPE_CYCLE = ("medium", "low", "high")
#: Every fourth home charges an electric vehicle.
EV_EVERY = 4
#: Every third home (meter-02, -05, -08, -11) has rooftop solar of 3-4 kWp and exports; of those, every
#: other one (meter-05, -11) also has a 5 kWh home battery.
SOLAR_EVERY = 3
SOLAR_KWP = (3.0, 3.5, 4.0, 3.2)
BATTERY_KWH = 5.0
HALF_HOUR = 1_800
HISTORY_BATCH = 100
_FIRST = ("Amelia", "Oliver", "Isla", "George", "Ava", "Noah", "Mia", "Arthur", "Freya", "Leo", "Grace", "Oscar")
_LAST = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Thomas", "Roberts", "Walker",
         "Wright", "Hughes")
_STREETS = ("Station Road", "Church Lane", "Victoria Street", "Park Avenue", "Mill Lane", "The Green")
_TOWNS = ("Sheffield S1", "Leeds LS2", "Bristol BS1", "Norwich NR2", "Cardiff CF10", "York YO1")


@dataclass(frozen=True)
class ProvisionReport:
    """What provisioning did and how long it took."""

    created: list[str]
    reregistered: list[str]
    skipped: list[str]
    readings: int
    seconds: float


def _customer(i: int, identity: MeterIdentity) -> Customer:
    first, last = _FIRST[i % len(_FIRST)], _LAST[(i * 7) % len(_LAST)]
    return Customer(
        meter=identity.address,
        meter_name=identity.name,
        account_ref=identity.account_ref,
        name=f"{first} {last}",
        address=f"{10 + i} {_STREETS[i % len(_STREETS)]}, {_TOWNS[i % len(_TOWNS)]}",
        email=f"{first.lower()}.{last.lower()}@example.org",
        api_key=secrets.token_urlsafe(24),
        archetype=identity.archetype,
        region=identity.region,
    )


def provision(settings: Settings, count: int = 12, history_days: int | None = None,
              client: ChainClient | None = None) -> ProvisionReport:
    """Make sure ``count`` meters exist, are registered and have their history on chain (through ``client``, one
    that waits for finality for the operator's tool; by default one that waits for each receipt)."""
    started = time.monotonic()
    days = settings.history_days if history_days is None else history_days
    deployment = load_deployment(settings)
    billing = Billing(client or ChainClient(settings), deployment)
    customers_path = settings.data_dir / "customers.json"
    customers = load_customers(customers_path)
    end = int(time.time()) // HALF_HOUR * HALF_HOUR
    opened_at = end - days * 86_400
    todo: list[tuple[MeterIdentity, Path, int]] = []
    created, reregistered, skipped = [], [], []
    for i in range(count):
        name = f"meter-{i + 1:02d}"
        directory = meter_dir(settings.data_dir, name)
        if (directory / "meter.json").exists():
            identity = MeterIdentity.load(directory)
            if billing.meter(identity.address).registered:
                skipped.append(name)
                continue
            reregistered.append(name)
            with MeterLock(directory, name).acquire("provisioning"):  # refuses while the meter runs
                outbox = Outbox(directory / "outbox.sqlite", identity.address)
                outbox.clear()
                outbox.close()
        else:
            solar = i % SOLAR_EVERY == 1
            identity = MeterIdentity.create(
                directory, name, ARCHETYPE_CYCLE[i % len(ARCHETYPE_CYCLE)], seed=1_000 + i,
                region=REGIONS[i % len(REGIONS)], account_ref="0x" + secrets.token_hex(32),
                ev=(i % EV_EVERY == EV_EVERY - 1),
                solar_kwp=SOLAR_KWP[(i // SOLAR_EVERY) % len(SOLAR_KWP)] if solar else 0.0,
                battery_kwh=BATTERY_KWH if solar and (i // SOLAR_EVERY) % 2 == 1 else 0.0,
            )
            created.append(name)
        customers.setdefault(identity.address.lower(), _customer(i, identity))
        opening_wh = 4_000_000 + (i * 1_234_567) % 30_000_000
        todo.append((identity, directory, opening_wh))
    save_customers(customers_path, customers)
    if not todo:
        return ProvisionReport(created, reregistered, skipped, 0, time.monotonic() - started)

    billing.register_meters(
        [(ident.address, bytes.fromhex(ident.account_ref[2:]), ident.region, wh) for ident, _, wh in todo],
        opened_at=opened_at,
    )
    log_event(log, "meters_registered", count=len(todo), opened_at=opened_at)

    signed: list[tuple[int, str, ReadingData, str]] = []
    ends: dict[str, MeterPosition] = {}
    for identity, directory, opening_wh in todo:
        key = identity.key(directory)
        household = identity.household()
        points = household_history(household, opened_at, end, HALF_HOUR, opening_wh) if end > opened_at else []
        for seq, (ts, wh, exported) in enumerate(points, start=1):
            data = ReadingData(identity.address, seq, ts, wh, exported)
            signed.append((ts, identity.address, data, sign_reading(key, deployment.domain, data)))
        last_ts, last_wh, last_export = points[-1] if points else (opened_at, opening_wh, 0)
        ends[identity.address] = MeterPosition(len(points), last_ts, last_wh, last_export)
    signed.sort(key=lambda item: (item[0], item[1]))
    contract = billing.contract
    for i in range(0, len(signed), HISTORY_BATCH):
        chunk = signed[i:i + HISTORY_BATCH]
        batch = b"".join(pack_reading(d, s) for _, _, d, s in chunk)
        spans = extra_periods((d.timestamp - HALF_HOUR, d.timestamp) for _, _, d, _ in chunk)
        billing.client.transact(settings.gateway_key, contract.functions.submitReadings(batch),
                                gas=gas_limit_for(len(chunk), spans))
    for identity, directory, _ in todo:
        on_chain = billing.meter(identity.address)
        expected = ends[identity.address]
        if on_chain.last_seq != expected.last_seq:
            raise RuntimeError(f"{identity.name}: chain holds seq {on_chain.last_seq}, expected {expected.last_seq}")
        with MeterLock(directory, identity.name).acquire("provisioning"):
            outbox = Outbox(directory / "outbox.sqlite", identity.address)
            outbox.set_position(expected)
            outbox.close()
    seconds = time.monotonic() - started
    log_event(log, "provisioned", meters=len(todo), readings=len(signed), seconds=f"{seconds:.1f}")
    return ProvisionReport(created, reregistered, skipped, len(signed), seconds)
