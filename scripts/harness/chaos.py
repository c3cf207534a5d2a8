"""A bounded chaos run on loopback: a fleet of meter processes sends readings at accelerated
intervals while the harness kills the gateway with SIGKILL, restarts the chain and drops meter
connections; then every meter's on-chain record is checked against the meter's own.

Checks per meter: recorded sequence numbers run without a gap except where a rejection
explains it; nothing is recorded twice; the chain's register equals the meter's own; the bill
equals an independent recomputation from the events (``common.tariff.accrue``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.billing import Billing
from common.chain import ChainClient
from common.deployer import deploy
from common.deployment import load_deployment
from common.devchain import GanacheProcess, free_port
from common.events import unpack_record
from common.settings import ROOT, Settings, load_settings
from common.tariff import MeterLedger, accrue
from meters.identity import MeterIdentity, list_meters, meter_dir
from meters.outbox import Outbox
from operations.provisioning import provision

__all__ = ["ChaosConfig", "MeterVerdict", "ChaosReport", "run_chaos"]


@dataclass(frozen=True)
class ChaosConfig:
    """How big and how hostile a run is."""

    meters: int = 12
    readings: int = 300
    gateway_kills: int = 3
    chain_restarts: int = 1
    meter_drops: int = 6
    time_scale: float = 30.0
    seed: int = 1
    timeout_s: float = 900.0


@dataclass
class MeterVerdict:
    """What the chain holds for one meter against what the meter produced."""

    name: str
    produced: int
    recorded: int
    rejected: int
    lost: list[int]
    duplicated: list[int]
    register_ok: bool
    bill_ok: bool


@dataclass
class ChaosReport:
    """The run's outcome."""

    verdicts: list[MeterVerdict]
    faults: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        """Readings neither recorded nor rejected."""
        return sum(len(v.lost) for v in self.verdicts)

    @property
    def duplicated(self) -> int:
        """Readings recorded more than once."""
        return sum(len(v.duplicated) for v in self.verdicts)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing duplicated, registers and bills agree."""
        return not self.lost and not self.duplicated and all(v.register_ok and v.bill_ok for v in self.verdicts)

    def table(self) -> str:
        """A per-meter table and a summary line."""
        lines = [f"{'meter':<10} {'produced':>8} {'recorded':>8} {'rejected':>8} {'lost':>5} {'dup':>4} "
                 f"{'register':>8} {'bill':>5}"]
        for v in self.verdicts:
            register, bill = ("ok" if v.register_ok else "DIFF"), ("ok" if v.bill_ok else "DIFF")
            lines.append(f"{v.name:<10} {v.produced:>8} {v.recorded:>8} {v.rejected:>8} {len(v.lost):>5} "
                         f"{len(v.duplicated):>4} {register:>8} {bill:>5}")
        sent = sum(v.produced for v in self.verdicts)
        lines.append(f"\nreadings sent {sent}; faults injected {len(self.faults)} ({', '.join(self.faults)}); "
                     f"lost {self.lost}; duplicated {self.duplicated}; {self.seconds:.0f} s")
        return "\n".join(lines)


class _Proc:
    """A child process with its log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> _Proc:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _env(settings: Settings, config: ChaosConfig) -> dict[str, str]:
    return {
        **os.environ,
        **settings.as_env(),
        "TIME_SCALE": str(config.time_scale),
        "READING_MIN_INTERVAL": "15",
        "READING_MAX_INTERVAL": "15",
    }


def _wait_listening(log: Path, offset: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "event=gateway_listening" in log.read_text()[offset:]:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start; see {log}")


def verify(settings: Settings, names: list[str]) -> list[MeterVerdict]:
    """Check every meter's on-chain record against its own outbox."""
    client = ChainClient(settings)
    deployment = load_deployment(settings)
    billing = Billing(client, deployment)
    contract = billing.contract
    schedule = billing.schedule()
    verdicts = []
    for name in names:
        directory = meter_dir(settings.data_dir, name)
        identity = MeterIdentity.load(directory)
        outbox = Outbox(directory / "outbox.sqlite", identity.address)
        position = outbox.position()
        waiting = {e.seq for e in outbox.pending()}
        outbox.close()
        filt = {"meter": identity.address}
        recorded = contract.events.ReadingRecorded().get_logs(from_block=deployment.block, argument_filters=filt)
        rejected = contract.events.ReadingRejected().get_logs(from_block=deployment.block, argument_filters=filt)
        registered = contract.events.MeterRegistered().get_logs(from_block=deployment.block, argument_filters=filt)[0]
        records = [unpack_record(int(e.args.record)) for e in recorded]
        seqs = [r["seq"] for r in records]
        rejected_seqs = {int(e.args.seq) for e in rejected}
        duplicated = sorted({s for s in seqs if seqs.count(s) > 1})
        produced = position.last_seq if position else 0
        lost = [s for s in range(1, produced + 1) if s not in seqs and s not in rejected_seqs and s not in waiting]
        state = billing.meter(identity.address)
        register_ok = state.last_energy_wh == (position.last_energy_wh if position is not None and not waiting
                                                else state.last_energy_wh)
        ledger = MeterLedger(True, 0, int(registered.args.openedAt), int(registered.args.openingWh))
        for r in records:
            ledger = accrue(ledger, r["seq"], r["timestamp"], r["energyWh"], r["exportWh"], schedule)
        bill = billing.bill(identity.address)
        bill_ok = (bill.energy_cost, bill.export_credit) == (ledger.period_import_cost, ledger.period_export_credit)
        verdicts.append(MeterVerdict(name, produced, len(seqs), len(rejected_seqs), lost, duplicated,
                                     register_ok, bill_ok))
    return verdicts


def run_chaos(config: ChaosConfig, base: Path | None = None, say=print) -> ChaosReport:  # type: ignore[no-untyped-def]
    """Run the whole chaos scenario on its own chain and servers; returns the report."""
    started = time.monotonic()
    rng = random.Random(config.seed)
    owned = base is None
    tmp = tempfile.TemporaryDirectory() if owned else None
    base = Path(tmp.name) if tmp else base
    assert base is not None
    chain = GanacheProcess(base / "chain", log_path=base / "ganache.log").start()
    server: _Proc | None = None
    meters: dict[str, _Proc] = {}
    faults: list[str] = []
    try:
        settings = load_settings(env_file=base / "none.env", chain_rpc_url=chain.rpc_url, chain_ws_url=chain.ws_url,
                                 deployments_dir=base / "deployments", data_dir=base / "data",
                                 server_port=free_port(), http_port=free_port(), batch_max_wait=0.05)
        deploy(settings, force=True)
        provision(settings, count=config.meters, history_days=0)
        names = list_meters(settings.data_dir)
        env = _env(settings, config)
        server_log = base / "server.log"
        server = _Proc([sys.executable, "-m", "server"], env, server_log).start()
        _wait_listening(server_log, 0)
        for name in names:
            meters[name] = _Proc([sys.executable, "-m", "meters", name, "--plain", "--stop-after",
                                  str(config.readings)], env, base / f"{name}.out").start()
        expected = config.readings * 15 / config.time_scale
        plan: list[tuple[float, str]] = []
        plan += [((i + 1) / (config.gateway_kills + 1) * 0.8, "gateway") for i in range(config.gateway_kills)]
        plan += [((i + 1) / (config.chain_restarts + 1) * 0.7 + 0.05, "chain") for i in range(config.chain_restarts)]
        plan += [((i + 1) / (config.meter_drops + 1) * 0.85, "meter") for i in range(config.meter_drops)]
        plan.sort()
        t0 = time.monotonic()
        for at, kind in plan:
            time.sleep(max(0.0, t0 + at * expected - time.monotonic()))
            if kind == "gateway":
                server.kill()
                offset = server_log.stat().st_size
                time.sleep(2.0)
                server.start()
                _wait_listening(server_log, offset)
                faults.append("gateway SIGKILL")
            elif kind == "chain":
                chain.restart()
                faults.append("chain restart")
            else:
                victim = rng.choice(names)
                meters[victim].kill()
                time.sleep(1.0)
                identity = MeterIdentity.load(meter_dir(settings.data_dir, victim))
                outbox = Outbox(meter_dir(settings.data_dir, victim) / "outbox.sqlite", identity.address)
                position = outbox.position()
                outbox.close()
                remaining = max(1, config.readings - (position.last_seq if position else 0))
                meters[victim] = _Proc([sys.executable, "-m", "meters", victim, "--plain", "--stop-after",
                                        str(remaining)], env, base / f"{victim}.out").start()
                faults.append(f"{victim} dropped")
            say(f"chaos: {faults[-1]} at {time.monotonic() - t0:.0f} s")
        deadline = t0 + config.timeout_s
        while any(m.running() for m in meters.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"meters did not finish within {config.timeout_s:.0f} s; see {base}")
            time.sleep(1.0)
        time.sleep(2.0)  # let the last batch land
        verdicts = verify(settings, names)
    finally:
        for proc in meters.values():
            proc.kill()
        if server is not None:
            server.stop()
        chain.stop()
        if tmp is not None:
            tmp.cleanup()
    return ChaosReport(verdicts, faults, time.monotonic() - started)
