"""Benchmarks on loopback: end-to-end ingest through the gateway against the raw capacity of the
same chain, latency sent -> final bill, gas per reading by batch size, and the gateway's memory
with idle authenticated connections; on Ganache (automine), a Hardhat node, and Anvil mining a
block a second with two confirmations (where a bill is final two blocks after its own, and the
raw chain's run is timed to the same depth). Figures are printed and written as JSON, never
asserted."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from common.batches import gas_limit_for, pack_reading, submit_readings_calldata
from common.billing import Billing
from common.chain import ChainClient
from common.deployer import deploy
from common.devchain import AnvilProcess, GanacheProcess, free_port
from common.eip712 import ReadingData, sign_reading
from common.messages import Bill, encode
from common.settings import ROOT, Settings, load_settings
from common.tls import client_context
from meters.link import MeterLink, signed_reading
from scripts.harness.proctree import TreeCpu, cpu_between, cpu_seconds, descendants, snapshot

__all__ = ["BenchConfig", "format_report", "format_sweep", "run_bench"]

OPENING_WH = 100_000
#: After the server starts: time for its relay to catch up with the raw run's blocks.
SETTLE_SECONDS = 2.0
#: With the fleet connected and before its burst: the server's CPU with nothing to ingest (its relay
#: following the chain's blocks, fee reads, health), to tell the cost of a reading from the running cost.
IDLE_SECONDS = 3.0
#: How long ``python -m server`` (and its worker processes) may take to listen.
START_SECONDS = 180.0


@dataclass(frozen=True)
class BenchConfig:
    """Fleet sizes and counts."""

    fleets: tuple[int, ...] = (12, 100, 1_000)
    readings_per_meter: dict[int, int] = field(default_factory=lambda: {12: 20, 100: 5, 1_000: 2, 5_000: 1})
    #: A Hardhat node takes a Ganache run's load in a fraction of a second: sustained runs need more.
    hardhat_readings_per_meter: dict[int, int] = field(default_factory=lambda: {100: 50, 1_000: 5, 5_000: 1})
    latency_seconds: float = 20.0
    gas_batches: tuple[int, ...] = (1, 10, 50, 100, 200)
    idle: tuple[int, ...] = (1_000,)
    hardhat_fleets: tuple[int, ...] = ()
    anvil_fleets: tuple[int, ...] = ()
    anvil_readings_per_meter: dict[int, int] = field(default_factory=lambda: {100: 10, 1_000: 3, 5_000: 2})
    anvil_block_time: float = 1.0
    anvil_confirmations: int = 2
    #: Batches in flight on Anvil: with a block a second, two would cap the gateway at 200 readings a block.
    anvil_pipeline: int = 8
    #: The gateway's batch size on Anvil (``BATCH_MAX_SIZE``): with the pipeline, at most their product a block.
    anvil_batch: int = 100
    #: Readings per meter for every fleet and chain, instead of the defaults above (0: the defaults).
    per_meter: int = 0
    #: Gateway worker processes (``GATEWAY_WORKERS``): every fleet's ingest runs once with each count.
    workers: tuple[int, ...] = (1,)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Server:
    """``python -m server`` as a child process, with ``workers`` gateway worker processes
    (``GATEWAY_WORKERS``; a server without worker processes ignores the variable)."""

    def __init__(self, settings: Settings, log: Path, workers: int = 1) -> None:
        self.settings, self.log, self.workers = settings, log, workers
        self.proc: Any = None
        #: Descendants still running after the server itself had exited, killed by ``stop``.
        self.leftovers = 0

    async def start(self) -> None:
        s = self.settings
        env = {**os.environ, **s.as_env(), "BATCH_MAX_WAIT": "0.02",
               "RATE_LIMIT_PER_SECOND": "1000", "RATE_LIMIT_BURST": "1000", "AUTH_TIMEOUT": "60",
               "GATEWAY_WORKERS": str(self.workers)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", "--log-level", "WARNING", "--log-file", str(self.log), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        # Workers are spawned processes that import the server afresh: on a loaded machine that takes a while.
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} while starting: {self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", s.server_port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server did not listen within {START_SECONDS:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        """The server log's last lines (for an error message)."""
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])[-1500:]
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        """Stop the server; its worker processes must go with it (a worker left listening on the
        port, with SO_REUSEPORT, would take a share of the next run's meters), so any still there
        a few seconds after the server has exited are killed, by pid, and counted."""
        tree = descendants(self.proc.pid)
        self.proc.terminate()
        await self.proc.wait()
        for _ in range(50):
            tree = [pid for pid in tree if Path(f"/proc/{pid}").exists()]
            if not tree:
                return
            await asyncio.sleep(0.1)
        self.leftovers += len(tree)
        for pid in tree:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


async def _connect_all(settings: Settings, domain: Any, accounts: list[LocalAccount]) -> list[MeterLink]:
    ctx = client_context(settings.ca_cert_path)
    gate = asyncio.Semaphore(100)

    async def one(a: LocalAccount) -> MeterLink:
        async with gate:
            link = MeterLink(settings.server_url, ctx, a.key, domain, open_timeout=60, ping_interval=None)
            await link.connect()
            return link

    return await asyncio.gather(*(one(a) for a in accounts))


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _ingest(settings: Settings, domain: Any, accounts: list[LocalAccount], per_meter: int, server_pid: int,
                  opened: int, chain_pid: int) -> dict[str, Any]:
    """Every meter sends ``per_meter`` readings at once; time until every final bill is back.

    The simulated meters only look for ``bill`` frames (no schema validation of each message),
    so that the harness takes as little of the machine's CPU from the gateway and chain as it can.
    """
    login0, login_started = snapshot(server_pid), time.monotonic()
    links = await _connect_all(settings, domain, accounts)
    login_seconds = time.monotonic() - login_started
    logins = cpu_between(login0, snapshot(server_pid), server_pid)
    sent_at: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    messages = []
    for a in accounts:
        for i in range(1, per_meter + 1):
            msg = signed_reading(a.key, domain, ReadingData(a.address, i, opened + 60 * i, OPENING_WH + 10 * i))
            messages.append((a, msg))
    by_meter: dict[str, list[Any]] = {}
    for a, msg in messages:
        by_meter.setdefault(a.address, []).append(msg)
    frames = {a.address: [encode(m) for m in by_meter[a.address]] for a in accounts}
    await asyncio.sleep(1.0)  # the last logins' work
    idle0, idle_started = snapshot(server_pid), time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    idle = cpu_between(idle0, snapshot(server_pid), server_pid).seconds / (time.monotonic() - idle_started)
    tree0, chain0, own0 = snapshot(server_pid), cpu_seconds(chain_pid), _own_cpu_seconds()
    started = time.monotonic()

    async def drive(link: MeterLink, a: LocalAccount) -> None:
        assert link.ws is not None
        for seq, frame in enumerate(frames[a.address], start=1):
            sent_at[(a.address, seq)] = time.monotonic()
            await link.ws.send(frame)
        got = 0
        while got < per_meter:
            frame = str(await asyncio.wait_for(link.ws.recv(), timeout=600))
            if '"type":"bill"' in frame and '"final":false' not in frame:  # the final bill
                latencies.append(time.monotonic() - sent_at[(a.address, json.loads(frame)["seq"])])
                got += 1

    await asyncio.gather(*(drive(link, a) for link, a in zip(links, accounts, strict=True)))
    elapsed = time.monotonic() - started
    tree: TreeCpu = cpu_between(tree0, snapshot(server_pid), server_pid)
    chain_cpu = cpu_seconds(chain_pid) - chain0
    own = _own_cpu_seconds() - own0
    await asyncio.gather(*(link.close() for link in links))
    n = len(messages)
    return {"readings": n, "seconds": elapsed, "throughput": n / elapsed,
            # The server's main process alone (the figure's meaning before worker processes):
            "gateway_cpu_ms_per_reading": tree.root_seconds / n * 1000,
            # ... and every process of the server's tree (main process and gateway workers):
            "server_cpu_ms_per_reading": tree.seconds / n * 1000,
            "server_processes": {"before": tree.before, "after": tree.after, "exited": tree.exited,
                                 "started": tree.started},
            # ... its CPU with the fleet connected and idle, per second, and what is left per reading
            # once that running cost over the run's time is taken off:
            "server_idle_cpu_ms_per_second": idle * 1000,
            "server_cpu_ms_per_reading_net": (tree.seconds - idle * elapsed) / n * 1000,
            # Connecting the fleet (TLS handshake, challenge, signed login, welcome), 100 at a time:
            "connect_seconds": login_seconds,
            "server_cpu_ms_per_login": logins.seconds / len(accounts) * 1000,
            "chain_cpu_ms_per_reading": chain_cpu / n * 1000, "harness_cpu_ms_per_reading": own / n * 1000,
            "p50": _pct(latencies, 0.50), "p95": _pct(latencies, 0.95), "p99": _pct(latencies, 0.99)}


async def _paced_latency(settings: Settings, domain: Any, accounts: list[LocalAccount], seconds: float,
                         opened: int) -> dict[str, float]:
    """Each meter sends one reading every second (as a live fleet does, or as soon as its last one's final bill
    is back when that takes longer); latency sent -> final bill."""
    links = await _connect_all(settings, domain, accounts)
    latencies: list[float] = []

    async def drive(link: MeterLink, a: LocalAccount) -> None:
        seq = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seq += 1
            sent = time.monotonic()
            await link.send(signed_reading(a.key, domain, ReadingData(a.address, seq, opened + 60 * seq,
                                                                      OPENING_WH + 10 * seq)))
            while True:
                msg = await link.recv(timeout=60)
                if isinstance(msg, Bill) and msg.seq == seq and msg.final is not False:
                    latencies.append(time.monotonic() - sent)
                    break
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - sent)))

    await asyncio.gather(*(drive(link, a) for link, a in zip(links, accounts, strict=True)))
    await asyncio.gather(*(link.close() for link in links))
    return {"readings": len(latencies), "p50": _pct(latencies, 0.5), "p95": _pct(latencies, 0.95),
            "p99": _pct(latencies, 0.99)}


def _raw_chain(settings: Settings, billing: Billing, count: int, batch: int, opened: int,
               chain_pid: int) -> dict[str, float]:
    """The chain's own time for the same kind of batches: transactions encoded and signed beforehand,
    sent back to back with the gateway key, then each receipt checked (the clock stops at the last, or,
    with ``CONFIRMATIONS``, once the last one's block is that deep: when the gateway's bills are final)."""
    accounts = [Account.create() for _ in range(batch)]
    billing.register_meters([(a.address, b"\x01" * 32, "bench", OPENING_WH) for a in accounts], opened)
    queued = []
    for i in range(1, count // batch + 1):
        for a in accounts:
            data = ReadingData(a.address, i, opened + 60 * i, OPENING_WH + 10 * i)
            queued.append((data, sign_reading(a.key, billing.deployment.domain, data)))
    w3 = billing.client.w3
    gateway = Account.from_key(settings.gateway_key)
    nonce, price = w3.eth.get_transaction_count(gateway.address, "pending"), w3.eth.gas_price
    raw_txs: list[bytes] = []
    for i in range(0, len(queued), batch):
        chunk = queued[i:i + batch]
        tx = {"to": billing.deployment.address, "data": submit_readings_calldata(chunk), "value": 0,
              "gas": gas_limit_for(len(chunk)), "gasPrice": price, "nonce": nonce + len(raw_txs),
              "chainId": settings.chain_id}
        raw_txs.append(gateway.sign_transaction(tx).raw_transaction)
    started, chain0 = time.monotonic(), cpu_seconds(chain_pid)
    sent = [w3.eth.send_raw_transaction(raw) for raw in raw_txs]
    last = 0
    for tx_hash in sent:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.005)
        assert receipt["status"] == 1
        last = max(last, int(receipt["blockNumber"]))
    while settings.finality_depth and w3.eth.block_number < last + settings.finality_depth:
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    return {"readings": len(queued), "seconds": elapsed, "throughput": len(queued) / elapsed,
            "chain_cpu_ms_per_reading": (cpu_seconds(chain_pid) - chain0) / len(queued) * 1000}


def _gas(settings: Settings, billing: Billing, sizes: tuple[int, ...], opened: int) -> list[dict[str, int]]:
    accounts = [Account.create() for _ in range(max(sizes))]
    billing.register_meters([(a.address, b"\x01" * 32, "gas", OPENING_WH) for a in accounts], opened)
    state = {a.address: 0 for a in accounts}

    def submit(selected: list[LocalAccount]) -> int:
        signed = []
        for a in selected:
            state[a.address] += 1
            i = state[a.address]
            data = ReadingData(a.address, i, opened + 60 * i, OPENING_WH + 10 * i)
            signed.append((data, sign_reading(a.key, billing.deployment.domain, data)))
        return int(billing.submit_readings(signed)["gasUsed"]) if len(signed) <= 100 else _big(signed)

    def _big(signed: list[Any]) -> int:
        batch = b"".join(pack_reading(r, sig) for r, sig in signed)
        call = billing.contract.functions.submitReadings(batch)
        return int(billing.client.transact(settings.gateway_key, call, gas=gas_limit_for(len(signed)))["gasUsed"])

    for i in range(0, len(accounts), 100):
        submit(accounts[i:i + 100])  # every meter's first reading
    rows = []
    for size in sizes:
        gas = submit(accounts[:size])
        rows.append({"batch": size, "gas": gas, "gas_per_reading": gas // size})
    return rows


async def _idle_memory(settings: Settings, domain: Any, billing: Billing, count: int, server_pid: int,
                       opened: int) -> dict[str, float]:
    accounts = [Account.create() for _ in range(count)]
    await asyncio.to_thread(billing.register_meters,
                            [(a.address, b"\x01" * 32, "idle", OPENING_WH) for a in accounts], opened)
    before = _rss_mb(server_pid)
    links = await _connect_all(settings, domain, accounts)
    await asyncio.sleep(2.0)
    after = _rss_mb(server_pid)
    await asyncio.gather(*(link.close() for link in links))
    return {"connections": count, "rss_mb_before": before, "rss_mb_with_connections": after,
            "kb_per_connection": (after - before) * 1024 / count}


def _register(billing: Billing, accounts: list[LocalAccount], opened: int) -> None:
    """Register the fleet's meters: every transaction sent first, then every receipt checked (on a chain with
    block times, waiting for each in turn would take a block per 100 meters)."""
    hashes = billing.register_meters([(a.address, b"\x01" * 32, "bench", OPENING_WH) for a in accounts], opened,
                                     wait=False)
    for tx_hash in hashes:
        receipt = billing.client.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=300, poll_latency=0.05)
        assert receipt["status"] == 1, "registering the benchmark's meters failed"


async def _ingest_suite(settings: Settings, deployment: Any, billing: Billing, server: _Server, chain_pid: int,
                        opened: int, say: Any, fleets: tuple[int, ...],
                        readings_per_meter: dict[int, int], workers: tuple[int, ...] = (1,),
                        per_meter: int = 0) -> dict[str, Any]:
    """Ingest through the gateway for each fleet size and each count of gateway worker processes, beside
    the raw chain for the same load.

    The raw chain runs with the server stopped, so that the chain serves the raw run alone (a
    server following the chain costs it an ``eth_getLogs`` per block, and takes CPU from it as it
    relays and indexes the events). It runs just before each gateway run, which is the baseline,
    and again just after, to show drift: a node just out of a gateway burst can be a third slower
    for some seconds (a Hardhat node spent four times its usual kernel time per reading then), so
    the run after is printed and kept but not used. The chain first runs a few untimed batches: a
    node compiles the contract's hot code on first use (a Hardhat node spends over a second on its
    first batch), which would otherwise count against whichever run comes first. Each gateway run
    has a fleet of fresh meters and a server started afresh with ``GATEWAY_WORKERS`` set. The
    figures of a fleet are those of the first worker count (as before the sweep), with every
    count's under ``by_workers``. ``server`` is running on entry and on return (with the worker
    count it had on entry).
    """
    entry_workers = server.workers
    await server.stop()
    try:
        await asyncio.to_thread(_raw_chain, settings, billing, 300, 100, opened, chain_pid)
        ingest: dict[str, Any] = {}
        for fleet in fleets:
            per = per_meter or readings_per_meter.get(fleet, 2)
            batch = min(100, max(fleet, 1))
            by_workers: dict[str, Any] = {}
            for count in workers:
                accounts = [Account.create() for _ in range(fleet)]
                await asyncio.to_thread(_register, billing, accounts, opened)
                before = await asyncio.to_thread(_raw_chain, settings, billing, fleet * per, batch, opened, chain_pid)
                server.workers = count
                left = server.leftovers
                try:
                    await server.start()
                    await asyncio.sleep(SETTLE_SECONDS)
                    gw = await _ingest(settings, deployment.domain, accounts, per, server.proc.pid, opened, chain_pid)
                except Exception as err:  # one run's failure is reported; the sweep goes on
                    by_workers[str(count)] = {"workers": count, "error": f"{type(err).__name__}: {err}"}
                    say(f"ingest {fleet} meters, {count} gateway worker(s): FAILED: {err}")
                    if server.proc is not None and server.proc.returncode is None:
                        await server.stop()
                    await asyncio.sleep(SETTLE_SECONDS)
                    continue
                await server.stop()
                gw["server_leftovers_killed"] = server.leftovers - left
                await asyncio.sleep(SETTLE_SECONDS)
                after = await asyncio.to_thread(_raw_chain, settings, billing, fleet * per, batch, opened, chain_pid)
                gw["workers"] = count
                gw["raw_chain_throughput"] = before["throughput"]
                gw["raw_chain_cpu_ms_per_reading"] = before["chain_cpu_ms_per_reading"]
                gw["raw_chain_after"] = after["throughput"]
                gw["raw_chain_after_cpu_ms_per_reading"] = after["chain_cpu_ms_per_reading"]
                gw["gateway_vs_chain"] = gw["throughput"] / gw["raw_chain_throughput"]
                by_workers[str(count)] = gw
                procs = gw["server_processes"]
                say(f"ingest {fleet} meters, {count} gateway worker(s): {gw['throughput']:.1f} readings/s through "
                    f"the gateway, {gw['raw_chain_throughput']:.1f}/s raw chain ({gw['gateway_vs_chain']:.0%}; raw "
                    f"again after: {after['throughput']:.0f}/s); server CPU {gw['server_cpu_ms_per_reading']:.3f} "
                    f"ms/reading over {procs['after']} process(es) ({procs['exited']} exited during the run); "
                    f"{fleet} logins in {gw['connect_seconds']:.1f} s, {gw['server_cpu_ms_per_login']:.2f} ms of "
                    f"server CPU each")
            ingest[str(fleet)] = {**by_workers[str(workers[0])], "by_workers": by_workers}

    finally:
        server.workers = entry_workers
        if server.proc.returncode is not None:
            await server.start()
    return ingest


HARDHAT_DIR = ROOT / "build" / "hardhat"
#: Same chain id, hardfork and deterministic accounts as the project's Ganache.
HARDHAT_CONFIG = """module.exports = {
  networks: { hardhat: { chainId: 1337, hardfork: "shanghai", mining: { auto: true }, blockGasLimit: 30000000,
    accounts: { count: 10,
      mnemonic: "myth like bonus scare over problem client lizard pioneer submit female collect" } } },
};
"""


async def _hardhat(config: BenchConfig, say: Any) -> dict[str, Any]:
    """The same ingest against a Hardhat node (installed on demand into build/hardhat)."""
    import subprocess

    if not (HARDHAT_DIR / "node_modules" / ".bin" / "hardhat").exists():
        HARDHAT_DIR.mkdir(parents=True, exist_ok=True)
        (HARDHAT_DIR / "package.json").write_text('{"private": true}\n')
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "hardhat@2"],
                              cwd=HARDHAT_DIR, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return {"skipped": f"could not install hardhat: {done.stderr[-300:]}"}
    (HARDHAT_DIR / "hardhat.config.js").write_text(HARDHAT_CONFIG)
    port = free_port()
    hardhat = str(HARDHAT_DIR / "node_modules" / ".bin" / "hardhat")
    node = subprocess.Popen([hardhat, "node", "--hostname", "127.0.0.1", "--port", str(port)], cwd=HARDHAT_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from common.devchain import rpc_answers

        for _ in range(300):
            if rpc_answers(f"http://127.0.0.1:{port}"):
                break
            await asyncio.sleep(0.1)
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            settings = load_settings(env_file=base / "none.env", chain_rpc_url=f"http://127.0.0.1:{port}",
                                     chain_ws_url=f"ws://127.0.0.1:{port}", deployments_dir=base / "deployments",
                                     data_dir=base / "data", server_port=free_port(), http_port=free_port())
            deployment, _ = deploy(settings, force=True)
            billing = Billing(ChainClient(settings), deployment)
            server = _Server(settings, base / "server.log")
            await server.start()
            try:
                block = billing.client.w3.eth.get_block("latest")
                opened = int(block["timestamp"]) - 30 * 86_400
                return await _ingest_suite(settings, deployment, billing, server, node.pid, opened,
                                           lambda m: say("hardhat: " + m), config.hardhat_fleets,
                                           config.hardhat_readings_per_meter, config.workers, config.per_meter)
            finally:
                await server.stop()
    finally:
        node.terminate()
        node.wait()


async def _anvil(config: BenchConfig, say: Any) -> dict[str, Any]:
    """Ingest and latency against Anvil mining a block every ``anvil_block_time`` seconds, to final bills."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        node = AnvilProcess(base / "chain", log_path=base / "anvil.log", block_time=config.anvil_block_time).start()
        try:
            assert node.proc is not None
            settings = load_settings(env_file=base / "none.env", chain_rpc_url=node.rpc_url, chain_ws_url=node.ws_url,
                                     deployments_dir=base / "deployments", data_dir=base / "data",
                                     server_port=free_port(), http_port=free_port(),
                                     confirmations=config.anvil_confirmations, batch_pipeline=config.anvil_pipeline,
                                     batch_max_size=config.anvil_batch)
            deployment, _ = deploy(settings, force=True)
            billing = Billing(ChainClient(settings), deployment)
            opened = int(time.time()) - 30 * 86_400
            server = _Server(settings, base / "server.log")
            await server.start()
            out: dict[str, Any] = {"block_time": config.anvil_block_time,
                                   "confirmations": config.anvil_confirmations}
            try:
                out["ingest"] = await _ingest_suite(settings, deployment, billing, server, node.proc.pid, opened,
                                                    lambda m: say("anvil: " + m), config.anvil_fleets,
                                                    config.anvil_readings_per_meter, config.workers, config.per_meter)
                if config.latency_seconds > 0:
                    accounts = [Account.create() for _ in range(12)]
                    await asyncio.to_thread(billing.register_meters,
                                            [(a.address, b"\x01" * 32, "lat", OPENING_WH) for a in accounts], opened)
                    out["latency_12_paced"] = await _paced_latency(settings, deployment.domain, accounts,
                                                                   config.latency_seconds, opened)
                    say(f"anvil: latency to the final bill, 12 meters: {out['latency_12_paced']}")
            finally:
                await server.stop()
            return out
        finally:
            node.stop()


async def run_bench(config: BenchConfig, say: Any = print) -> dict[str, Any]:
    """Run every benchmark on its own Ganache and server; returns the figures."""
    _raise_fd_limit()
    began = time.monotonic()
    results: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "load_before": os.getloadavg()},
                               "workers": list(config.workers)}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        chain = GanacheProcess(base / "chain", log_path=base / "ganache.log").start()
        try:
            settings = load_settings(env_file=base / "none.env", chain_rpc_url=chain.rpc_url,
                                     chain_ws_url=chain.ws_url, deployments_dir=base / "deployments",
                                     data_dir=base / "data", server_port=free_port(), http_port=free_port())
            deployment, _ = deploy(settings, force=True)
            billing = Billing(ChainClient(settings), deployment)
            opened = int(time.time()) - 30 * 86_400
            server = _Server(settings, base / "server.log")
            await server.start()
            assert server.proc is not None and chain.proc is not None
            pid = server.proc.pid
            try:
                results["ingest"] = await _ingest_suite(settings, deployment, billing, server, chain.proc.pid, opened,
                                                        say, config.fleets, config.readings_per_meter,
                                                        config.workers, config.per_meter)
                assert server.proc is not None
                pid = server.proc.pid
                if config.latency_seconds > 0:
                    latency_accounts = [Account.create() for _ in range(12)]
                    await asyncio.to_thread(billing.register_meters,
                                            [(a.address, b"\x01" * 32, "lat", OPENING_WH) for a in latency_accounts],
                                            opened)
                    results["latency_12_paced"] = await _paced_latency(settings, deployment.domain, latency_accounts,
                                                                       config.latency_seconds, opened)
                    say(f"latency, 12 meters at one reading a second: {results['latency_12_paced']}")
                results["memory"] = [await _idle_memory(settings, deployment.domain, billing, n, pid, opened)
                                     for n in config.idle]
                say(f"memory: {results['memory']}")
            finally:
                await server.stop()
            results["gas"] = await asyncio.to_thread(_gas, settings, billing, config.gas_batches, opened)
        finally:
            chain.stop()
    if config.hardhat_fleets:
        results["hardhat"] = await _hardhat(config, say)
    if config.anvil_fleets:
        results["anvil"] = await _anvil(config, say)
    results["machine"]["load_after"] = os.getloadavg()
    results["elapsed_seconds"] = time.monotonic() - began
    return results


def _after(g: dict[str, Any]) -> str:
    return f"{g['raw_chain_after']:.0f}" if "raw_chain_after" in g else "-"


#: Issue 17's goals for the gateway's scaling, on Anvil.
GOAL_SHARE_OF_RAW = 0.90
GOAL_SHARE_FLEET = 1_000
GOAL_SERVER_CPU_MS = 0.25


def _chains(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(chain, its ingest figures by fleet) for each chain benchmarked."""
    return [("Ganache", r.get("ingest", {})), ("Hardhat", r.get("hardhat", {})),
            ("Anvil", r.get("anvil", {}).get("ingest", {}))]


def _sweep_rows(r: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(chain, fleet, figures) for every gateway run, every worker count."""
    rows = []
    for chain, ingest in _chains(r):
        for fleet, g in ingest.items():
            if fleet == "skipped":
                continue
            for run in g.get("by_workers", {"1": g}).values():
                if "error" not in run:
                    rows.append((chain, int(fleet), run))
    return rows


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def format_sweep(r: dict[str, Any]) -> str:
    """The gateway against the raw chain for every chain, fleet and count of gateway workers, and
    issue 17's two goals: the gateway at 90% or more of the raw chain's rate at 1,000 meters on
    Anvil, and the server's CPU per reading (all its processes) at most 0.25 ms."""
    rows = _sweep_rows(r)
    nan = float("nan")
    failed = [f"{chain} {fleet} meters, {run['workers']} worker(s): {run['error']}" for chain, ingest in _chains(r)
              for fleet, g in ingest.items() if isinstance(g, dict)
              for run in g.get("by_workers", {}).values() if "error" in run]
    if not rows:
        return "\n".join(f"FAILED: {f}" for f in failed)
    lines = ["gateway against the raw chain, by gateway worker processes (server CPU: every process of the "
             "server's tree)",
             f"{'chain':<8} {'meters':>7} {'workers':>7} {'readings':>9} {'gateway r/s':>12} {'raw r/s':>9} "
             f"{'% of raw':>8} {'server cpu ms/r':>15} {'main proc':>9} {'net':>6} {'idle ms/s':>9} {'procs':>5} "
             f"{'p99 s':>7}"]
    for chain, fleet, g in rows:
        procs = g.get("server_processes", {})
        nprocs = f"{procs.get('after', '?')}" + (f"-{procs['exited']}" if procs.get("exited") else "")
        lines.append(f"{chain:<8} {fleet:>7,} {g.get('workers', 1):>7} {g['readings']:>9,} {g['throughput']:>12.1f} "
                     f"{g['raw_chain_throughput']:>9.1f} {g['gateway_vs_chain']:>8.0%} "
                     f"{g.get('server_cpu_ms_per_reading', g['gateway_cpu_ms_per_reading']):>15.3f} "
                     f"{g['gateway_cpu_ms_per_reading']:>9.3f} {g.get('server_cpu_ms_per_reading_net', nan):>6.3f} "
                     f"{g.get('server_idle_cpu_ms_per_second', nan):>9.1f} {nprocs:>5} {g['p99']:>7.2f}")
    anvil_goal = [(g.get("workers", 1), g["gateway_vs_chain"]) for chain, fleet, g in rows
                  if chain == "Anvil" and fleet == GOAL_SHARE_FLEET]
    if anvil_goal:
        each = ", ".join(f"{w} worker(s) {share:.0%} {_verdict(share >= GOAL_SHARE_OF_RAW)}" for w, share in anvil_goal)
        lines.append(f"goal: gateway >= {GOAL_SHARE_OF_RAW:.0%} of the raw chain's rate at {GOAL_SHARE_FLEET:,} meters "
                     f"on Anvil: {each}")
    else:
        lines.append(f"goal: gateway >= {GOAL_SHARE_OF_RAW:.0%} of the raw chain at {GOAL_SHARE_FLEET:,} meters on "
                     f"Anvil: not measured (run with --anvil {GOAL_SHARE_FLEET})")
    cpu_rows = [(chain, fleet, g) for chain, fleet, g in rows if chain == "Anvil"] or rows
    worst = max(cpu_rows, key=lambda row: row[2].get("server_cpu_ms_per_reading", 0.0))
    over = [f"{c} {f:,} meters x{g.get('workers', 1)}" for c, f, g in cpu_rows
            if g.get("server_cpu_ms_per_reading", 0.0) > GOAL_SERVER_CPU_MS]
    lines.append(f"goal: server CPU <= {GOAL_SERVER_CPU_MS} ms per reading, all processes "
                 f"({'Anvil' if cpu_rows is not rows else 'every'} run): highest "
                 f"{worst[2].get('server_cpu_ms_per_reading', 0.0):.3f} ms ({worst[0]} {worst[1]:,} meters, "
                 f"{worst[2].get('workers', 1)} worker(s)): {_verdict(not over)}"
                 + (f" (over in: {', '.join(over)})" if over else ""))
    lines.append("(server cpu: every process of the server's tree; main proc: the server's own process; net: "
                 "less the idle server's CPU per second (idle ms/s, the fleet connected) over the run's time; "
                 "procs: processes at the end, -n for any that exited during the run)")
    lines.extend(f"FAILED: {f}" for f in failed)
    exited = sum(g.get("server_processes", {}).get("exited", 0) for _, _, g in rows)
    if exited:
        lines.append(f"note: {exited} server process(es) exited during a timed run; their CPU after the run's start "
                     "counts only if a process of the server's tree reaped them")
    return "\n".join(lines)


def format_report(r: dict[str, Any]) -> str:
    """The figures as tables, with the goals beside them."""
    lines = ["ingest (signed reading sent -> bill received), burst of readings per meter",
             f"{'meters':>7} {'readings':>9} {'gateway r/s':>12} {'raw chain r/s':>14} {'ratio':>6} "
             f"{'cpu ms/r':>9} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'raw after':>10}"]
    for fleet, g in r.get("ingest", {}).items():
        if "error" in g:
            lines.append(f"{fleet:>7} FAILED: {g['error']}")
            continue
        lines.append(f"{fleet:>7} {g['readings']:>9} {g['throughput']:>12.1f} {g['raw_chain_throughput']:>14.1f} "
                     f"{g['gateway_vs_chain']:>6.0%} {g['gateway_cpu_ms_per_reading']:>9.2f} {g['p50']:>7.2f} "
                     f"{g['p95']:>7.2f} {g['p99']:>7.2f} {_after(g):>10}")
    lat = r.get("latency_12_paced")
    if lat:
        verdict = "PASS" if lat["p99"] < 1.0 else "MISS"
        lines.append(f"\n12 meters, one reading a second each: p50 {lat['p50']:.3f} s, p95 {lat['p95']:.3f} s, "
                     f"p99 {lat['p99']:.3f} s over {lat['readings']} readings (goal p99 < 1 s: {verdict})")
    for m in r.get("memory", []):
        lines.append(f"gateway memory with {m['connections']:,} idle connections: "
                     f"{m['rss_mb_with_connections']:.0f} MB "
                     f"(+{m['kb_per_connection']:.0f} kB each; 10,000 would be about "
                     f"{m['rss_mb_before'] + m['kb_per_connection'] * 10:.0f} MB, goal < 1 GB)")
    for fleet, g in r.get("hardhat", {}).items():
        if fleet == "skipped":
            lines.append(f"hardhat: skipped ({g})")
            continue
        if "error" in g:
            lines.append(f"hardhat node, {fleet} meters: FAILED: {g['error']}")
            continue
        lines.append(f"hardhat node, {fleet} meters, {g['readings']} readings: gateway {g['throughput']:.1f} r/s, "
                     f"raw chain {g['raw_chain_throughput']:.1f} r/s ({g['gateway_vs_chain']:.0%}; again after: "
                     f"{_after(g)} r/s); CPU ms per "
                     f"reading: gateway {g['gateway_cpu_ms_per_reading']:.2f}, "
                     f"chain {g['chain_cpu_ms_per_reading']:.2f} (raw run {g['raw_chain_cpu_ms_per_reading']:.2f}), "
                     f"harness {g['harness_cpu_ms_per_reading']:.2f}; p99 {g['p99']:.2f} s")
    anvil = r.get("anvil")
    if anvil:
        bound = (anvil["confirmations"] + 1) * anvil["block_time"] + 1
        for fleet, g in anvil.get("ingest", {}).items():
            if "error" in g:
                lines.append(f"anvil, {fleet} meters: FAILED: {g['error']}")
                continue
            lines.append(f"anvil ({anvil['block_time']:g} s blocks, {anvil['confirmations']} confirmations), {fleet} "
                         f"meters, {g['readings']} readings to final bills: gateway {g['throughput']:.1f} r/s, raw "
                         f"chain {g['raw_chain_throughput']:.1f} r/s ({g['gateway_vs_chain']:.0%}; again after: "
                         f"{_after(g)} r/s); p50 {g['p50']:.2f} s, p99 {g['p99']:.2f} s")
        lat = anvil.get("latency_12_paced")
        if lat:
            verdict = "PASS" if lat["p99"] <= bound else "MISS"
            lines.append(f"anvil, 12 meters, sent -> final bill: p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, "
                         f"p99 {lat['p99']:.2f} s over {lat['readings']} readings (goal p99 <= {bound:g} s: {verdict})")
    lines.append("\ngas per reading by batch size")
    for g in r.get("gas", []):
        lines.append(f"{g['batch']:>5} {g['gas']:>12,} {g['gas_per_reading']:>8,}")
    sweep = format_sweep(r)
    if sweep:
        lines.append("\n" + sweep)
    if "elapsed_seconds" in r:
        lines.append(f"\nthe benchmark took {r['elapsed_seconds']:.0f} s (load average before "
                     f"{r['machine']['load_before'][0]:.2f}, after {r['machine']['load_after'][0]:.2f})")
    return "\n".join(lines)
