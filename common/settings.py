"""Settings from the environment and a ``.env`` file, validated once at the edge.

Every limit and interval is a named setting with a documented default; ``.env.example``
lists them all with defaults that run locally. Environment variables win over ``.env``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from common.errors import ConfigError

__all__ = ["Settings", "load_settings", "ROOT", "GANACHE_DEV_KEYS", "LOCAL_CHAIN_ID", "REMOTE_CONFIRMATIONS"]

ROOT = Path(__file__).resolve().parent.parent
LOCAL_CHAIN_ID = 1337
#: Blocks on top of a block before it counts as final on any chain but the local one, when
#: ``CONFIRMATIONS`` is left automatic: deeper than any reorganisation Ethereum's proof-of-stake
#: chains have seen since the merge (their reorgs are of one or two blocks), and short enough
#: (2.4 minutes at 12 s blocks) that a meter's bill turns final within minutes.
REMOTE_CONFIRMATIONS = 12

#: Ganache's well-known keys for ``--wallet.deterministic``: local development only.
GANACHE_DEV_KEYS: tuple[str, ...] = (
    "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d",
    "0x6cbed15c793ce57650b9877cf6fa156fbef513c4e6134f022a85b1ffdd59b2a1",
    "0x6370fd033278c143179d81c5526140625662b8daa446c22ee2d73db3707e620c",
    "0x646f1ce2fdad0e6deeeb5c7e8e5543bdde65e86029e2fd9fc169899c440a7913",
    "0xadd53f9a7e588d003326d1cbf9e4a43c061aadd9bc938c843a79e7b4fd2ad743",
    "0x395df67f0c2d2d9fe1ad08d1bc8b6627011959b79c53d7dd6a3536a33ab8a4fd",
    "0xe485d098507f54e7733a205420dfddbe58db035fa577fc294ebd14db90767a52",
    "0xa453611d9419d0e56f499079478fd72c37b251a94bfde4d19872c44cf65386e3",
    "0x829e924fdf021ba3dbbc4225edfece9aca04b929d6e75613329ca6f1d31c0bb4",
    "0xb0057716d5917badaf911b193b12b910811c1497b5bada8d7711f758981c3773",
)


@dataclass(frozen=True)
class Settings:
    """All settings; names map to upper-case environment variables (``chain_rpc_url`` -> ``CHAIN_RPC_URL``)."""

    # chain
    chain_rpc_url: str = "http://127.0.0.1:8545"
    chain_ws_url: str = "ws://127.0.0.1:8545"
    chain_id: int = LOCAL_CHAIN_ID
    admin_key: str = GANACHE_DEV_KEYS[0]
    operator_key: str = GANACHE_DEV_KEYS[1]
    gateway_key: str = GANACHE_DEV_KEYS[2]
    grid_operator_key: str = GANACHE_DEV_KEYS[3]
    #: Pays the gas of meters' signed demand-response opt-outs the gateway and the API relay (its own nonces).
    relayer_key: str = GANACHE_DEV_KEYS[4]
    #: Blocks on top of a block before it counts as final; -1: automatic (0 on the local chain id, whose
    #: automining node never replaces a block, ``REMOTE_CONFIRMATIONS`` on any other).
    confirmations: int = -1
    #: The most the gateway pays per gas (EIP-1559 max fee, or legacy gas price), in gwei.
    max_fee_gwei: float = 100.0
    #: Seconds a submitted transaction may wait unmined before it is replaced at a higher fee.
    tx_replace_after: float = 60.0
    #: Seconds the gateway keeps final readings and the transactions that carried them, to submit them again
    #: should a reorganisation deeper than ``CONFIRMATIONS`` replace their blocks (0: none kept).
    resubmit_window: float = 86_400.0
    deployments_dir: Path = ROOT / "deployments"
    build_dir: Path = ROOT / "build"
    solc_binary: str = ""
    # contract parameters (used at deployment)
    tariff_unit_rate: int = 24_670
    tariff_standing_charge: int = 57_210
    #: Opening export rate, millipence per kWh (a typical Smart Export Guarantee rate; 0 for none).
    tariff_export_rate: int = 15_000
    max_power_w: int = 24_000
    max_future_skew: int = 300
    # server
    data_dir: Path = ROOT / "data"
    #: Where the index lives: empty for SQLite under DATA_DIR/index/, or a PostgreSQL URL
    #: (postgresql://user:password@host:port/database) shared by several API processes.
    index_url: str = ""
    server_host: str = "127.0.0.1"
    server_port: int = 8765
    #: Host names the server's certificate carries besides localhost and 127.0.0.1 (comma-separated): the name
    #: meters reach it by when that is not SERVER_HOST, e.g. ``server`` in the compose file.
    tls_hosts: str = ""
    #: Processes serving the meters' port (TLS, login, checks); above 1 they are stateless gateways on the bus
    #: sharing the port (SO_REUSEPORT), and the main process is a core (batcher, relay, indexer, API) on the bus:
    #: ``BUS_URL``'s, or a nats-server it starts itself under ``DATA_DIR/nats/`` when ``BUS_URL`` is empty.
    gateway_workers: int = 1
    #: The NATS servers (``nats://host:4222``, comma-separated: a cluster's nodes) that carry the reading log and
    #: the meter bus between gateways and cores on several machines; empty: SQLite and in-process delivery.
    bus_url: str = ""
    #: What this process runs: ``all`` (the meters' endpoint and the core), ``gateway`` (only the meters'
    #: endpoint, on the bus) or ``core`` (chain writer, relay, indexer and API, on the bus).
    server_role: str = "all"
    #: Partitions of the reading log: each core writes the meters of the partitions it holds (fixed once the
    #: stream exists).
    bus_partitions: int = 16
    #: Copies JetStream keeps of the reading log: 1 on one NATS server, 3 on a cluster of three or more.
    bus_replicas: int = 1
    http_port: int = 8766
    max_message_bytes: int = 4096
    rate_limit_per_second: float = 5.0
    rate_limit_burst: int = 20
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    challenge_ttl: float = 30.0
    #: Seconds a meter has to log in at the gateway, and a dashboard to send its credentials on the live feed.
    auth_timeout: float = 10.0
    max_pending_readings: int = 100_000
    batch_max_size: int = 100
    batch_max_wait: float = 0.5
    batch_pipeline: int = 2
    rpc_retry_attempts: int = 5
    # API, dashboard and consumption alerts
    operator_api_key: str = ""
    api_token_ttl: float = 43_200.0
    api_signin_rate_per_second: float = 1.0
    api_signin_burst: int = 20
    timezone: str = "Europe/London"
    hourly_limit_wh: int = 3_000
    jump_factor: float = 3.0
    jump_min_w: int = 1_000
    # messages between customers and the operator
    message_max_chars: int = 2_000
    message_rate_per_minute: int = 10
    message_max_per_account: int = 10_000
    # meters
    #: The gateways a meter may use, comma-separated wss:// URLs tried in turn when one fails; empty: the one
    #: gateway at SERVER_HOST:SERVER_PORT.
    server_urls: str = ""
    meter_count: int = 12
    reading_min_interval: float = 15.0
    reading_max_interval: float = 60.0
    time_scale: float = 1.0
    history_days: int = 7
    #: Share of demand-response events a simulated household opts out of (0: none, 1: all), drawn once per event.
    dr_opt_out_rate: float = 0.1

    @property
    def finality_depth(self) -> int:
        """``CONFIRMATIONS`` in force: the setting, or the automatic choice for the chain id."""
        if self.confirmations >= 0:
            return self.confirmations
        return 0 if self.chain_id == LOCAL_CHAIN_ID else REMOTE_CONFIRMATIONS

    @property
    def max_fee_wei(self) -> int:
        """``MAX_FEE_GWEI`` in wei."""
        return int(self.max_fee_gwei * 10**9)

    @property
    def server_url(self) -> str:
        """The meters' WebSocket URL of the gateway."""
        return f"wss://{self.server_host}:{self.server_port}"

    @property
    def meter_server_urls(self) -> list[str]:
        """The gateways meters connect to, in order of preference (``SERVER_URLS``, else ``server_url``)."""
        return split_urls(self.server_urls) or [self.server_url]

    @property
    def ca_cert_path(self) -> Path:
        """The private CA certificate meters trust."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def http_url(self) -> str:
        """The REST API's and dashboard's base URL."""
        return f"http://{self.server_host}:{self.http_port}"

    @property
    def tz(self) -> ZoneInfo:
        """The time zone days, weeks and months are counted in."""
        return ZoneInfo(self.timezone)

    def as_env(self) -> dict[str, str]:
        """Every setting as environment variables, for a child process that must use exactly these.

        ``SMARTMETER_ENV_FILE`` points nowhere, so the child ignores the project's ``.env``.
        """
        env = {f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}
        env["SMARTMETER_ENV_FILE"] = str(self.data_dir / "no-such.env")
        return env

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (tests and scripts use this)."""
        return dataclasses.replace(self, **changes)


def split_urls(text: str) -> list[str]:
    """A comma-separated list of URLs, blanks dropped."""
    return [u.strip() for u in text.split(",") if u.strip()]


def _convert(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            path = Path(raw)
            return path if path.is_absolute() else ROOT / path
        return raw
    except ValueError as err:
        raise ConfigError(f"setting {name.upper()}={raw!r} is not a valid {type(default).__name__}") from err


def load_settings(env_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from ``.env`` (if present) and the environment; keyword overrides win."""
    values: dict[str, str | None] = {}
    path = env_file or Path(os.environ.get("SMARTMETER_ENV_FILE", ROOT / ".env"))
    if path.exists():
        values.update(dotenv_values(path))
    values.update(os.environ)
    defaults = Settings()
    kwargs: dict[str, Any] = {}
    for f in fields(Settings):
        raw = values.get(f.name.upper())
        if raw is not None and raw != "":
            kwargs[f.name] = _convert(f.name, raw, getattr(defaults, f.name))
    kwargs.update(overrides)
    settings = Settings(**kwargs)
    if settings.reading_min_interval <= 0 or settings.reading_max_interval < settings.reading_min_interval:
        raise ConfigError("READING_MIN_INTERVAL must be positive and at most READING_MAX_INTERVAL")
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(f"TIMEZONE={settings.timezone!r} is not a known time zone (e.g. Europe/London)") from err
    if not 1 <= settings.gateway_workers <= 64:
        raise ConfigError("GATEWAY_WORKERS must be between 1 (the gateway in the server's process) and 64")
    if settings.server_role not in ("all", "gateway", "core"):
        raise ConfigError("SERVER_ROLE must be all (one process does everything), gateway or core (on the bus)")
    if settings.server_role != "all" and not settings.bus_url:
        raise ConfigError(f"SERVER_ROLE={settings.server_role} needs BUS_URL: gateways and cores meet on NATS")
    if settings.bus_url and not all(u.startswith(("nats://", "tls://")) for u in split_urls(settings.bus_url)):
        raise ConfigError("BUS_URL must be nats://host:port URLs, comma-separated (a cluster's nodes)")
    if not 1 <= settings.bus_partitions <= 1024 or not 1 <= settings.bus_replicas <= 5:
        raise ConfigError("BUS_PARTITIONS must be between 1 and 1024 and BUS_REPLICAS between 1 and 5")
    if not 1 <= settings.batch_pipeline <= 8:
        raise ConfigError("BATCH_PIPELINE must be between 1 and 8 (batches in flight at once)")
    if settings.confirmations < -1:
        raise ConfigError("CONFIRMATIONS must be 0 or more (or -1 for automatic: 0 on chain 1337, "
                          f"{REMOTE_CONFIRMATIONS} elsewhere)")
    if settings.max_fee_gwei <= 0 or settings.tx_replace_after <= 0:
        raise ConfigError("MAX_FEE_GWEI and TX_REPLACE_AFTER must be positive")
    if settings.resubmit_window < 0:
        raise ConfigError("RESUBMIT_WINDOW must be 0 (keep nothing) or a number of seconds")
    if not 1 <= settings.batch_max_size <= 250:
        raise ConfigError("BATCH_MAX_SIZE must be between 1 and 250 (the contract's MAX_BATCH)")
    if settings.api_signin_rate_per_second <= 0 or settings.api_signin_burst < 1:
        raise ConfigError("API_SIGNIN_RATE_PER_SECOND must be positive and API_SIGNIN_BURST at least 1")
    if not 0 <= settings.dr_opt_out_rate <= 1:
        raise ConfigError("DR_OPT_OUT_RATE must be between 0 and 1 (the share of events a household opts out of)")
    if settings.index_url and not settings.index_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"INDEX_URL must be empty (the index in SQLite under DATA_DIR) or a PostgreSQL URL "
                          f"postgresql://user:password@host:port/database, not {settings.index_url.split(':')[0]}:...")
    for name in ("message_max_chars", "message_rate_per_minute", "message_max_per_account"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name.upper()} must be at least 1")
    return settings
