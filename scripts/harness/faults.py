"""A real-network fault run on loopback: Anvil mining a block every second while a fleet of meter
processes sends readings at accelerated intervals, and the harness reorganises the chain
(``anvil_reorg``, 1 to 3 blocks deep, at random times), spikes the base fee tenfold
(``anvil_setNextBlockBaseFeePerGas``), drops the gateway's pending transactions
(``anvil_dropTransaction``), reorganises and then drops the batch the gateway sends again (so its
nonce is missing behind later batches), reorganises deeper than ``CONFIRMATIONS`` (final blocks
replaced: the gateway submits their readings again from its settled journal), restarts the node from
its state file and kills the gateway with SIGKILL. Then every meter's record on the final chain is
checked against the meter's own (nothing lost, nothing recorded twice, the bill equals a
recomputation from the chain's events, see ``scripts.harness.chaos.verify``), and the server's index
against one rebuilt from the chain.

``CONFIRMATIONS`` is the deepest ordinary reorganisation injected; the deep ones go two blocks
further, and replace final blocks."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from common.deployer import deploy
from common.deployment import load_deployment
from common.devchain import AnvilProcess, free_port
from common.events import unpack_record
from common.settings import Settings, load_settings
from meters.identity import list_meters
from operations.provisioning import provision
from scripts.harness.chaos import MeterVerdict, _Proc, _wait_listening, verify

__all__ = ["FaultConfig", "FaultReport", "run_faults", "index_differences", "recovery_times"]

GWEI = 10**9


@dataclass(frozen=True)
class FaultConfig:
    """How big and how hostile a run is."""

    meters: int = 12
    readings: int = 300
    reorgs: int = 5
    max_reorg_depth: int = 3
    fee_spikes: int = 3
    drops: int = 3
    #: Reorganisations followed by dropping the gateway's next pending transaction (the batch it sends again).
    resent_drops: int = 2
    #: Reorganisations ``max_reorg_depth + 2`` deep: final blocks replaced.
    deep_reorgs: int = 1
    node_restarts: int = 1
    gateway_kills: int = 1
    block_time: float = 1.0
    time_scale: float = 30.0
    seed: int = 1
    timeout_s: float = 900.0


@dataclass
class FaultReport:
    """The run's outcome."""

    verdicts: list[MeterVerdict]
    faults: Counter[str] = field(default_factory=Counter)
    index_differences: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: The chain's rejections by reason (``stale_sequence``: a second copy of a recorded reading, refused).
    rejections: Counter[str] = field(default_factory=Counter)
    #: Seconds from each reorganisation the server noticed to the next batch it saw mined.
    recoveries: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """Readings the meters produced."""
        return sum(v.produced for v in self.verdicts)

    @property
    def lost(self) -> int:
        """Readings neither recorded nor rejected on the final chain."""
        return sum(len(v.lost) for v in self.verdicts)

    @property
    def duplicated(self) -> int:
        """Readings recorded more than once."""
        return sum(len(v.duplicated) for v in self.verdicts)

    @property
    def ok(self) -> bool:
        """Nothing lost or duplicated, registers and bills agree, and the index equals a rebuilt one."""
        return (not self.lost and not self.duplicated and not self.index_differences
                and all(v.register_ok and v.bill_ok for v in self.verdicts))

    def summary(self) -> str:
        """One paragraph of figures."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.faults.items()))
        bills = sum(1 for v in self.verdicts if v.bill_ok)
        injected = sum(self.faults.values())
        return (f"readings sent {self.sent} by {len(self.verdicts)} meters; faults injected {injected} "
                f"({kinds}); lost {self.lost}; duplicated {self.duplicated}; bills equal to the recomputation "
                f"{bills}/{len(self.verdicts)}; rejected on chain: "
                f"{', '.join(f'{n} {r}' for r, n in sorted(self.rejections.items())) or 'none'}; "
                f"index equals a fresh reindex: "
                f"{'yes' if not self.index_differences else 'NO: ' + '; '.join(self.index_differences)}; "
                f"{self.recovery()}; {self.seconds:.0f} s")

    def recovery(self) -> str:
        """The next batch after a reorganisation, in words."""
        if not self.recoveries:
            return "no batch mined after a reorganisation to time"
        ordered = sorted(self.recoveries)
        return (f"next batch mined {ordered[len(ordered) // 2]:.1f} s (median) / {ordered[-1]:.1f} s (max) after "
                f"{len(ordered)} reorganisations")


def _dump(index: Any) -> dict[str, list[tuple[Any, ...]]]:
    from server.indexing.index import DERIVED_TABLES

    out = {}
    for table in DERIVED_TABLES:
        if table in ("journal", "blocks"):
            continue
        rows = index.db.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names
        out[table] = sorted((r[1:] if table == "consumption_alerts" else r for r in rows), key=repr)
    return out


def index_differences(settings: Settings) -> list[str]:
    """How the server's index (the server stopped) differs from one rebuilt from the chain: tables that differ."""
    from server.app import open_index
    from server.indexing.indexer import rebuild

    deployment = load_deployment(settings)
    live = open_index(settings, deployment)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = open_index(settings.replace(data_dir=Path(tmp)), deployment)
        try:
            asyncio.run(rebuild(settings, deployment, fresh))
            a, b = _dump(live), _dump(fresh)
            return [f"{t}: {len(a[t])} rows live, {len(b[t])} rebuilt" for t in a if a[t] != b[t]]
        finally:
            fresh.close()
            live.close()


def _gateway_pending(node: AnvilProcess, gateway: str) -> list[str]:
    pool: Any = node.rpc("txpool_content")
    by_sender = {k.lower(): v for k, v in (pool.get("pending") or {}).items()}
    return [tx["hash"] for tx in (by_sender.get(gateway.lower()) or {}).values()]


def _drop_next(node: AnvilProcess, gateway: str, before: set[str], timeout: float) -> bool:
    """Drop the first transaction of the gateway's to reach the pool that was not there before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tx_hash in _gateway_pending(node, gateway):
            if tx_hash not in before:
                node.rpc("anvil_dropTransaction", [tx_hash])
                return True
        time.sleep(0.02)
    return False


def run_faults(config: FaultConfig, base: Path | None = None,
               say: Callable[[str], None] = print) -> FaultReport:
    """Run the whole fault scenario on its own Anvil and server; returns the report."""
    from eth_account import Account

    started = time.monotonic()
    rng = random.Random(config.seed)
    tmp = tempfile.TemporaryDirectory() if base is None else None
    base = Path(tmp.name) if tmp is not None else base
    assert base is not None
    node = AnvilProcess(base / "chain", log_path=base / "anvil.log", block_time=config.block_time).start()
    server: _Proc | None = None
    meters: dict[str, _Proc] = {}
    faults: Counter[str] = Counter()
    notes: list[str] = []
    try:
        settings = load_settings(env_file=base / "none.env", chain_rpc_url=node.rpc_url, chain_ws_url=node.ws_url,
                                 deployments_dir=base / "deployments", data_dir=base / "data",
                                 server_port=free_port(), http_port=0, batch_max_wait=0.05,
                                 confirmations=config.max_reorg_depth, tx_replace_after=4.0)
        deploy(settings, force=True)
        provision(settings, count=config.meters, history_days=0)
        names = list_meters(settings.data_dir)
        gateway = Account.from_key(settings.gateway_key).address
        env = {**os.environ, **settings.as_env(), "TIME_SCALE": str(config.time_scale),
               "READING_MIN_INTERVAL": "15", "READING_MAX_INTERVAL": "15"}
        server_log = base / "server.log"
        server = _Proc([sys.executable, "-m", "server", "--log-file", str(server_log)], env,
                       base / "server.out").start()
        _wait_listening(server_log, 0)
        for name in names:
            meters[name] = _Proc([sys.executable, "-m", "meters", name, "--plain", "--stop-after",
                                  str(config.readings)], env, base / f"{name}.out").start()
        expected = config.readings * 15 / config.time_scale
        # The node restarts come first: Anvil 1.7.1 restarted from its state file after an anvil_reorg loses
        # contract code and blocks (its dump of a reorganised chain is inconsistent), which no real node does.
        plan: list[tuple[float, str]] = [(rng.uniform(0.05, 0.15), "node_restart") for _ in range(config.node_restarts)]
        after = 0.2 if config.node_restarts else 0.08
        for kind, count in (("reorg", config.reorgs), ("fee_spike", config.fee_spikes), ("drop", config.drops),
                            ("gateway_kill", config.gateway_kills), ("resent_drop", config.resent_drops),
                            ("deep_reorg", config.deep_reorgs)):
            reorganises = kind in ("reorg", "resent_drop", "deep_reorg")
            plan += [(rng.uniform(after if reorganises else 0.08, 0.85), kind) for _ in range(count)]
        plan.sort()
        t0 = time.monotonic()
        for at, kind in plan:
            time.sleep(max(0.0, t0 + at * expected - time.monotonic()))
            if kind == "reorg":
                depth = rng.randint(1, config.max_reorg_depth)
                node.rpc("anvil_reorg", [depth, []])
                faults[f"reorg depth {depth}"] += 1
            elif kind == "deep_reorg":
                depth = config.max_reorg_depth + 2
                node.rpc("anvil_reorg", [depth, []])
                faults[f"deep reorg depth {depth} (final blocks replaced)"] += 1
            elif kind == "resent_drop":
                before = set(_gateway_pending(node, gateway))
                node.rpc("anvil_reorg", [rng.randint(1, config.max_reorg_depth), []])
                if _drop_next(node, gateway, before, 15):
                    faults["reorg, then the batch sent again dropped"] += 1
                else:
                    notes.append("no transaction sent again after a reorganisation within 15 s")
            elif kind == "fee_spike":
                latest: Any = node.rpc("eth_getBlockByNumber", ["latest", False])
                base_fee = max(int(latest["baseFeePerGas"], 16), GWEI // 10)
                node.rpc("anvil_setNextBlockBaseFeePerGas", [hex(base_fee * 10)])
                faults["fee spike x10"] += 1
            elif kind == "drop":
                deadline = time.monotonic() + 15
                dropped = False
                while time.monotonic() < deadline and not dropped:
                    for tx_hash in _gateway_pending(node, gateway):
                        node.rpc("anvil_dropTransaction", [tx_hash])
                        dropped = True
                        break
                    time.sleep(0.02)
                if dropped:
                    faults["pending transaction dropped"] += 1
                else:
                    notes.append("no pending gateway transaction to drop within 15 s")
            elif kind == "node_restart":
                node.restart()
                faults["node restart from its state file"] += 1
            else:
                server.kill()
                offset = server_log.stat().st_size
                time.sleep(2.0)
                server.start()
                _wait_listening(server_log, offset)
                faults["gateway SIGKILL"] += 1
            say(f"faults: {kind} at {time.monotonic() - t0:.0f} s")
        deadline = t0 + config.timeout_s
        while any(m.running() for m in meters.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"meters did not finish within {config.timeout_s:.0f} s; see {base}")
            time.sleep(1.0)
        # Meters finish on final bills only; give the index the last final blocks too.
        time.sleep(config.block_time * (config.max_reorg_depth + 3))
        server.stop()
        verdicts = _strict(settings, verify(settings, names))
        differences = index_differences(settings)
        rejections = _rejections(settings)
        recoveries = recovery_times(server_log.read_text())
    finally:
        for proc in meters.values():
            proc.kill()
        if server is not None:
            server.stop()
        node.stop()
        if tmp is not None:
            tmp.cleanup()
    return FaultReport(verdicts, faults, differences, time.monotonic() - started, notes, rejections, recoveries)


def recovery_times(log_text: str) -> list[float]:
    """For each ``chain_reorganised`` in a server log, the seconds until the next ``batch_mined`` or
    ``batch_mined_again`` (reorganisations with no batch after them are left out)."""
    times: list[tuple[float, str]] = []
    for line in log_text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split(" ")[:3] if "=" in part)
        event = next((p.split("=", 1)[1] for p in line.split(" ") if p.startswith("event=")), "")
        if "ts" in fields and event in ("chain_reorganised", "batch_mined", "batch_mined_again"):
            stamp = datetime.fromisoformat(fields["ts"].replace("Z", "+00:00")).timestamp()
            times.append((stamp, event))
    found: list[float] = []
    for i, (stamp, event) in enumerate(times):
        if event == "chain_reorganised":
            after = next((t for t, e in times[i + 1:] if e != "chain_reorganised"), None)
            if after is not None:
                found.append(after - stamp)
    return found


def _strict(settings: Settings, verdicts: list[MeterVerdict]) -> list[MeterVerdict]:
    """Count as lost a reading the chain refused only as ``stale_sequence`` without ever recording it: the
    contract takes any seq above the last, so that is a reading overtaken by a later one, not a duplicate."""
    from common.chain import ChainClient
    from common.tariff import RejectReason
    from meters.identity import MeterIdentity, meter_dir

    deployment = load_deployment(settings)
    contract = ChainClient(settings).contract(deployment)
    recorded: dict[str, set[int]] = {}
    for e in contract.events.ReadingRecorded().get_logs(from_block=deployment.block):
        recorded.setdefault(e.args.meter.lower(), set()).add(unpack_record(int(e.args.record))["seq"])
    stale_only: dict[str, set[int]] = {}
    for e in contract.events.ReadingRejected().get_logs(from_block=deployment.block):
        if RejectReason(int(e.args.reason)) is RejectReason.STALE_SEQUENCE:
            stale_only.setdefault(e.args.meter.lower(), set()).add(int(e.args.seq))
    for verdict in verdicts:
        address = MeterIdentity.load(meter_dir(settings.data_dir, verdict.name)).address.lower()
        overtaken = stale_only.get(address, set()) - recorded.get(address, set())
        verdict.lost = sorted(set(verdict.lost) | overtaken)
    return verdicts


def _rejections(settings: Settings) -> Counter[str]:
    """The chain's ``ReadingRejected`` events by reason."""
    from common.chain import ChainClient
    from common.tariff import RejectReason

    deployment = load_deployment(settings)
    contract = ChainClient(settings).contract(deployment)
    events = contract.events.ReadingRejected().get_logs(from_block=deployment.block)
    return Counter(RejectReason(int(e.args.reason)).name.lower() for e in events)
