"""What ``/health`` reports: each part of the server with a state and a reason, and the whole.

The judgement is pure (``judge_*`` and ``overall``: snapshots in, states out); ``HealthCheck``
takes the snapshots from the running parts. It is polled, so it stays cheap: the chain is asked
for its id and latest block at most once per ``CHAIN_PROBE_TTL`` seconds however many callers
poll, everything else is read from memory, and the queue's oldest reading is one indexed row.
Nothing it reports needs credentials: errors are shortened and URLs lose everything but their
scheme, host and port.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from server.supervisor import PartStatus

if TYPE_CHECKING:  # only read here: the API's schemas import this module without pulling in the parts
    from server.indexing.index import Index
    from server.indexing.indexer import Indexer
    from server.relay.relay import Relay
    from server.writer.batcher import Batcher
    from server.writer.store import Store

__all__ = [
    "State",
    "ChainHealth",
    "BatcherHealth",
    "RelayHealth",
    "IndexerHealth",
    "GatewayHealth",
    "judge_gateway",
    "HealthParts",
    "HealthReport",
    "HealthCheck",
    "ChainProbe",
    "judge_chain",
    "judge_part",
    "judge_batcher",
    "judge_relay",
    "judge_indexer",
    "overall",
    "redact",
]

#: Seconds a probe of the chain is reused (``/health`` may be polled often, by many).
CHAIN_PROBE_TTL = 2.0
#: Seconds the chain is given to answer a probe before it counts as unreachable.
CHAIN_PROBE_TIMEOUT = 3.0
#: A reading waiting longer than this (seconds) means the batcher is falling behind.
QUEUE_STALE_SECONDS = 60.0
#: The batcher failing for longer than this (seconds) without a success is down rather than degraded.
BATCHER_DOWN_AFTER = 30.0
#: Events waiting for the index beyond this mean the indexer is falling behind.
INDEX_BACKLOG_LIMIT = 5_000
#: How long an index update that failed keeps the indexer degraded (seconds).
INDEX_FAILURE_MEMORY = 3_600.0

Status = Literal["ok", "degraded", "down"]


class State(str, Enum):
    """How a part is doing."""

    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True)
class ChainHealth:
    """The chain node: can it be reached, is it the deployment's chain, how far it is."""

    state: State
    reason: str
    reachable: bool
    chain_id: int | None
    latest_block: int | None


@dataclass(frozen=True)
class BatcherHealth:
    """The batcher: running, when a batch last reached the chain, what waits, what fails."""

    state: State
    reason: str
    running: bool
    restarts: int
    queued: int
    oldest_queued_seconds: float | None
    last_batch_at: str | None
    failures_in_a_row: int
    last_error: str | None


@dataclass(frozen=True)
class RelayHealth:
    """The relay: connected to the chain's WebSocket, caught up, the newest block it read."""

    state: State
    reason: str
    running: bool
    restarts: int
    connected: bool
    caught_up: bool
    last_block: int | None


@dataclass(frozen=True)
class IndexerHealth:
    """The indexer: running, its position against the chain's head, what waits to be applied."""

    state: State
    reason: str
    running: bool
    restarts: int
    position_block: int | None
    chain_head: int | None
    backlog: int
    last_error: str | None


@dataclass(frozen=True)
class GatewayHealth:
    """The meters' endpoint: its processes (``GATEWAY_WORKERS``; 1 is the server's own) and the meters connected."""

    state: State
    reason: str
    workers: int
    workers_up: int
    meters_connected: int


def judge_gateway(workers: int, up: int, connected: int) -> GatewayHealth:
    """Up when every gateway process listens, degraded while some are being started again, down when none is."""
    if up >= workers:
        state = State.UP
        reason = f"{connected} meters connected" + (f" over {workers} worker processes" if workers > 1 else "")
    elif up > 0:
        state = State.DEGRADED
        reason = (f"{workers - up} of {workers} gateway worker processes are down and being started again (see "
                  "task_failed in the server's log); their meters reconnect to the others")
    else:
        state = State.DOWN
        reason = ("no gateway worker process serves the meters' port: they are being started again; if this lasts, "
                  "see task_failed in the server's log")
    return GatewayHealth(state, reason, workers, min(up, workers), connected)


@dataclass(frozen=True)
class HealthParts:
    """Every part ``/health`` reports."""

    chain: ChainHealth
    batcher: BatcherHealth
    relay: RelayHealth
    indexer: IndexerHealth
    gateway: GatewayHealth | None = None


@dataclass(frozen=True)
class HealthReport:
    """The whole: ``ok`` when every part is up."""

    status: Status
    reason: str
    parts: HealthParts


@dataclass(frozen=True)
class ChainProbe:
    """What the chain answered (or not) when last asked."""

    chain_id: int | None
    latest_block: int | None
    error: str | None


_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@\s]*@)?([^/\s?#]+)[^\s]*")


def redact(text: str) -> str:
    """``text`` without what a URL may carry besides its scheme, host and port (credentials, API keys in paths)."""
    return _URL.sub(r"\1\2", text)


def judge_chain(probe: ChainProbe, expected_chain_id: int) -> ChainHealth:
    """The chain is up when it answers with the deployment's chain id."""
    reachable = probe.error is None
    if not reachable:
        state, reason = State.DOWN, (f"cannot reach the blockchain node (CHAIN_RPC_URL): {probe.error}; is it "
                                     "running? start it with ./run-docker.sh")
    elif probe.chain_id != expected_chain_id:
        state, reason = State.DOWN, (f"the node answers chain id {probe.chain_id} but the contract is deployed on "
                                     f"chain {expected_chain_id}: CHAIN_RPC_URL points at another chain")
    else:
        state, reason = State.UP, f"reachable, at block {probe.latest_block}"
    return ChainHealth(state, reason, reachable, probe.chain_id, probe.latest_block)


def judge_part(part: PartStatus) -> tuple[State, str] | None:
    """A supervised part that is not running: down if it ended or keeps failing, else degraded; None if running."""
    if part.running:
        return None
    error = redact(part.last_error or "it returned")
    if part.ended:
        return State.DOWN, f"stopped ({error}); the server must be restarted"
    if part.keeps_failing:
        return State.DOWN, (f"keeps failing ({part.failures_in_a_row} times in a row, restarted {part.restarts} "
                            f"times): {error}; see the server's log")
    return State.DEGRADED, f"restarting after a failure: {error}"


def judge_batcher(part: PartStatus, queued: int, oldest_queued_seconds: float | None, last_batch_at: float | None,
                  failures_in_a_row: int, failing_since: float | None, last_error: str | None,
                  now: float) -> BatcherHealth:
    """The batcher is up when it runs, its last attempt succeeded and nothing has waited too long."""
    judged = judge_part(part)
    if judged is not None:
        state, reason = judged
    elif failures_in_a_row and failing_since is not None:
        failing_for = now - failing_since
        state = State.DOWN if failing_for >= BATCHER_DOWN_AFTER else State.DEGRADED
        reason = (f"failing for {failing_for:.0f} s ({failures_in_a_row} attempts): {last_error}; the readings stay "
                  "queued and are tried again")
    elif oldest_queued_seconds is not None and oldest_queued_seconds > QUEUE_STALE_SECONDS:
        state, reason = State.DEGRADED, (f"falling behind: the oldest of {queued} queued readings has waited "
                                         f"{oldest_queued_seconds:.0f} s")
    else:
        state, reason = State.UP, f"running, {queued} readings queued"
    return BatcherHealth(state, reason, part.running, part.restarts, queued,
                         None if oldest_queued_seconds is None else round(oldest_queued_seconds, 3),
                         _iso(last_batch_at), failures_in_a_row, None if last_error is None else redact(last_error))


def judge_relay(part: PartStatus, connected: bool, caught_up: bool, last_block: int | None) -> RelayHealth:
    """The relay is up when it runs, is connected to the chain's WebSocket and has caught up."""
    judged = judge_part(part)
    if judged is not None:
        state, reason = judged
    elif not connected:
        state, reason = State.DOWN, ("not connected to the chain's WebSocket (CHAIN_WS_URL), reconnecting: meters get "
                                     "no bills and the index no events meanwhile")
    elif not caught_up:
        state, reason = State.DEGRADED, "connected, catching up with the contract's log"
    else:
        state, reason = State.UP, f"following the chain, at block {last_block}"
    return RelayHealth(state, reason, part.running, part.restarts, connected, caught_up, last_block)


def judge_indexer(part: PartStatus, position_block: int | None, chain_head: int | None, backlog: int,
                  last_failure: tuple[float, str] | None, now: float) -> IndexerHealth:
    """The indexer is up when it runs, keeps up with what the relay hands it and has not failed lately."""
    judged = judge_part(part)
    failure = last_failure if last_failure is not None and now - last_failure[0] < INDEX_FAILURE_MEMORY else None
    if judged is not None:
        state, reason = judged
    elif failure is not None:
        state, reason = State.DEGRADED, (f"an update failed {now - failure[0]:.0f} s ago ({failure[1]}); the API may "
                                         "miss its events: stop the server and run scripts/reindex.py")
    elif backlog > INDEX_BACKLOG_LIMIT:
        state, reason = State.DEGRADED, f"falling behind: {backlog} events wait to be indexed"
    else:
        state, reason = State.UP, f"running, last event at block {position_block}"
    return IndexerHealth(state, reason, part.running, part.restarts, position_block, chain_head, backlog,
                         None if failure is None else redact(failure[1]))


def overall(parts: HealthParts) -> tuple[Status, str]:
    """``down`` when readings cannot reach the chain (chain or batcher down), ``degraded`` when any other part is
    not up, else ``ok``; with the reasons of the parts that are not up."""
    named: list[tuple[str, ChainHealth | BatcherHealth | RelayHealth | IndexerHealth | GatewayHealth]] = [
        ("chain", parts.chain), ("batcher", parts.batcher), ("relay", parts.relay), ("indexer", parts.indexer)]
    if parts.gateway is not None:
        named.append(("gateway", parts.gateway))
    problems = [f"{name}: {part.state.value}, {part.reason}" for name, part in named if part.state is not State.UP]
    if not problems:
        return "ok", "every part is up"
    core_down = State.DOWN in (parts.chain.state, parts.batcher.state)
    return ("down" if core_down else "degraded"), "; ".join(problems)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


class HealthCheck:
    """Takes the snapshots from the running server and judges them."""

    def __init__(self, chain_request: Callable[[str, list[Any]], Awaitable[Any]], expected_chain_id: int,
                 parts: dict[str, PartStatus], batcher: Batcher, relay: Relay, indexer: Indexer, store: Store,
                 index: Index, ttl: float = CHAIN_PROBE_TTL, timeout: float = CHAIN_PROBE_TIMEOUT,
                 gateway: Callable[[], tuple[int, int, int]] | None = None) -> None:
        """``parts`` are the supervisor's; the others are the server's own parts, only read here. ``gateway``: the
        gateway's processes, how many listen, and the meters connected."""
        self.chain_request = chain_request
        self.expected_chain_id = expected_chain_id
        self.parts = parts
        self.batcher = batcher
        self.relay = relay
        self.indexer = indexer
        self.store = store
        self.index = index
        self.ttl = ttl
        self.timeout = timeout
        self.gateway = gateway
        self._probe: tuple[float, ChainProbe] | None = None
        self._probing: asyncio.Task[ChainProbe] | None = None

    async def report(self) -> HealthReport:
        """Every part's state and reason, and the whole."""
        probe = await self.probe_chain()
        now = time.time()
        oldest = self.store.oldest_received_at()
        batcher = self.batcher
        position = self.index.position()
        parts = HealthParts(
            chain=judge_chain(probe, self.expected_chain_id),
            batcher=judge_batcher(self._part("batcher"), self.store.count(),
                                  None if oldest is None else max(0.0, now - oldest), batcher.last_batch_at,
                                  batcher.failures_in_a_row, batcher.failing_since, batcher.last_error, now),
            relay=judge_relay(self._part("relay"), self.relay.connected.is_set(), self.relay.caught_up.is_set(),
                              self.relay.head),
            indexer=judge_indexer(self._part("indexer"), position[0] if position else None, probe.latest_block,
                                  self.indexer.backlog, self.indexer.last_failure, now),
            gateway=judge_gateway(*self.gateway()) if self.gateway is not None else None,
        )
        status, reason = overall(parts)
        return HealthReport(status, reason, parts)

    def _part(self, name: str) -> PartStatus:
        part = self.parts.get(name)
        return part if part is not None else PartStatus(name, ended=True, last_error="it was never started")

    async def probe_chain(self) -> ChainProbe:
        """The chain's id and latest block, asked at most once per ``ttl`` however many callers ask at once."""
        now = time.monotonic()
        if self._probe is not None and now - self._probe[0] < self.ttl:
            return self._probe[1]
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self._ask_chain())
        return await asyncio.shield(self._probing)

    async def _ask_chain(self) -> ChainProbe:
        try:
            chain_id, block = await asyncio.wait_for(
                asyncio.gather(self.chain_request("eth_chainId", []), self.chain_request("eth_blockNumber", [])),
                timeout=self.timeout)
            probe = ChainProbe(int(chain_id, 16), int(block, 16), None)
        except asyncio.TimeoutError:
            probe = ChainProbe(None, None, f"no answer within {self.timeout:.0f} s")
        except Exception as err:  # noqa: BLE001 - whatever stops the node answering makes it unreachable
            probe = ChainProbe(None, None, redact(f"{type(err).__name__}: {err}")[:300])
        self._probe = (time.monotonic(), probe)
        return probe
