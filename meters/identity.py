"""A meter's identity on disk: its Ethereum key (a file only its owner can read) and its
configuration (household archetype, seed, region). No personal data: customer records live
in the operator's off-chain customer file, keyed by the opaque account reference.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account

from common.errors import ConfigError
from meters.household import Battery, Household, SolarModel
from meters.load_model import LoadModel

__all__ = ["MeterIdentity", "meter_dir", "list_meters"]

KEY_FILE = "key.hex"
CONFIG_FILE = "meter.json"


def meter_dir(data_dir: Path, name: str) -> Path:
    """The folder of meter ``name`` under the data directory."""
    return data_dir / "meters" / name


@dataclass(frozen=True)
class MeterIdentity:
    """Who a meter is and how it behaves."""

    name: str
    address: str
    archetype: str
    seed: int
    region: str
    account_ref: str
    ev: bool = False
    #: Rooftop solar panels' peak rating in kW (0: none) and home battery capacity in kWh (0: none).
    solar_kwp: float = 0.0
    battery_kwh: float = 0.0

    @staticmethod
    def create(directory: Path, name: str, archetype: str, seed: int, region: str, account_ref: str,
               ev: bool = False, solar_kwp: float = 0.0, battery_kwh: float = 0.0) -> MeterIdentity:
        """Make a new key and write the meter's files (the key readable by its owner only)."""
        directory.mkdir(parents=True, exist_ok=True)
        account = Account.create()
        key_path = directory / KEY_FILE
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(bytes(account.key).hex())
        identity = MeterIdentity(name, account.address, archetype, seed, region, account_ref, ev, solar_kwp,
                                 battery_kwh)
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(identity), indent=2) + "\n")
        return identity

    @staticmethod
    def load(directory: Path) -> MeterIdentity:
        """Read a provisioned meter's configuration."""
        path = directory / CONFIG_FILE
        if not path.exists():
            raise ConfigError(f"no meter at {directory}; provision meters with scripts/provision.py")
        return MeterIdentity(**json.loads(path.read_text()))

    def household(self, multiplier: float = 1.0) -> Household:
        """The simulated home behind this meter: its demand, solar panels and battery."""
        load = LoadModel(self.archetype, self.seed, multiplier, self.ev)
        solar = SolarModel(self.solar_kwp, self.seed) if self.solar_kwp > 0 else None
        battery = Battery(self.battery_kwh * 1_000) if self.battery_kwh > 0 and solar is not None else None
        return Household(load, solar, battery)

    def describe(self) -> str:
        """The household in a few words: archetype, EV, solar and battery."""
        extras = [" + EV" if self.ev else "", f" + {self.solar_kwp:g} kWp solar" if self.solar_kwp else "",
                  f" + {self.battery_kwh:g} kWh battery" if self.battery_kwh and self.solar_kwp else ""]
        return self.archetype + "".join(extras)

    def key(self, directory: Path) -> bytes:
        """The meter's private key (refuses a key file others can read)."""
        path = directory / KEY_FILE
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by other users; run: chmod 600 {path}")
        return bytes.fromhex(path.read_text().strip())


def list_meters(data_dir: Path) -> list[str]:
    """Names of every provisioned meter, sorted."""
    root = data_dir / "meters"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).exists())
