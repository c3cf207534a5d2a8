"""What ``GET /metrics`` exposes to Prometheus: counters of what happened, gauges of how things stand.

Counters are prometheus-client metrics incremented where the thing happens (a reading refused, a
login, a batch mined, a contract event read, a REST request). Gauges are read from the running
parts when Prometheus scrapes (``ServerCollector``: the queue, the chain's head and how far the
relay, the final block and the index are behind it, the supervised parts, the gateway key's
funds), so they can never disagree with ``/health``. Labels are bounded: error codes, outcomes,
route templates, event names and part names, never a meter's address.

With ``GATEWAY_WORKERS`` > 1 the meters' endpoint runs in gateway processes: each writes its
gateway counters to prometheus-client's multiprocess files (``count_in_files``, in
``DATA_DIR/gateway/metrics``), and the main process's ``/metrics`` adds them up with its own
(``MultiProcessCollector``, as prometheus-client documents), so one scrape sees the whole server.
The ``process_*`` metrics are the main process's.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from common.batches import gas_limit_for
from common.errors import SmartMeterError
from common.events import ChainEvent

if TYPE_CHECKING:  # only read here
    from common.chain import AsyncChainClient
    from server.health import HealthCheck

__all__ = [
    "CONTENT_TYPE",
    "GatewayCounters",
    "gateway_counters",
    "count_in_files",
    "worker_files",
    "clear_worker_files",
    "batch_mined",
    "demand_response_event",
    "EventCounter",
    "ServerCollector",
    "RequestMetrics",
    "Exposition",
    "exposition",
]

#: The media type of the text format ``/metrics`` answers in.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Seconds the gateway key's balance and the chain's fees read for a scrape are reused.
FUNDS_TTL = 30.0

# ``*_created`` series double every counter and mean nothing summed over processes.
disable_created_metrics()  # type: ignore[no-untyped-call]

READINGS_RECORDED = Counter(
    "smartmeter_readings_recorded", "Readings the contract recorded (ReadingRecorded events read by the relay).")
CHAIN_EVENTS = Counter(
    "smartmeter_chain_events", "The billing contract's events read by the relay, by event name.", ["event"])
BATCHES = Counter("smartmeter_batches_mined", "submitReadings transactions mined.")
BATCH_SIZE = Histogram("smartmeter_batch_size_readings", "Readings in each mined batch.",
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
BATCH_MINED_SECONDS = Histogram(
    "smartmeter_batch_mined_seconds", "Seconds from sending a batch's transaction to seeing it mined.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))
BATCH_WAIT_SECONDS = Histogram(
    "smartmeter_batch_oldest_reading_wait_seconds",
    "Seconds the oldest reading of each mined batch waited since the gateway acknowledged it.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900))
BATCH_GAS_PER_READING = Histogram(
    "smartmeter_batch_gas_per_reading", "Gas used per reading in batches whose receipt was read.",
    buckets=(2_000, 3_000, 4_000, 5_000, 7_500, 10_000, 20_000, 50_000, 100_000))
READINGS_FINAL_SECONDS = Histogram(
    "smartmeter_block_final_seconds",
    "Seconds from the relay first reading a block with recorded readings to that block being final.",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800))
DR_EVENTS = Counter("smartmeter_demand_response_events",
                    "Demand-response contract events applied (announced, cancelled, opted out, credited), by name.",
                    ["event"])
DR_CREDIT = Counter("smartmeter_demand_response_credit",
                    "Credit the demand-response contract applied to bills, in the tariff's minor units.")
HTTP_REQUESTS = Counter("smartmeter_http_requests", "REST and dashboard requests answered, by route and status.",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram("smartmeter_http_request_duration_seconds",
                         "Seconds from a request to the start of its answer.",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


@dataclass(frozen=True)
class GatewayCounters:
    """The meters' endpoint's counters (in whichever process serves the meters)."""

    accepted: Counter
    refused: Counter
    logins: Counter


@cache
def gateway_counters() -> GatewayCounters:
    """The gateway's counters, made at first use so that a worker process can count in files first."""
    return GatewayCounters(
        accepted=Counter("smartmeter_readings_accepted",
                         "Readings the gateway acknowledged and stored in its queue."),
        refused=Counter("smartmeter_readings_refused",
                        "Readings and other messages from logged-in meters the gateway refused, by error code.",
                        ["code"]),
        logins=Counter("smartmeter_meter_logins", "Meters' login attempts by outcome (ok, or the error code).",
                       ["outcome"]),
    )


def worker_files(data_dir: Path) -> Path:
    """Where gateway worker processes keep their counters (prometheus-client's multiprocess files)."""
    return data_dir / "gateway" / "metrics"


def clear_worker_files(data_dir: Path) -> Path:
    """Empty the workers' counters directory before the workers start (a past run's files would be added in)."""
    path = worker_files(data_dir)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def count_in_files(data_dir: Path) -> None:
    """In a gateway worker process, before it counts anything: keep the gateway's counters in multiprocess files.

    prometheus-client picks its value store from ``PROMETHEUS_MULTIPROC_DIR`` when a metric's value is made;
    the gateway's counters are made at first use (``gateway_counters``), after this."""
    if gateway_counters.cache_info().currsize:
        raise RuntimeError("count_in_files must run before the gateway's counters are first used")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(worker_files(data_dir))
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def batch_mined(size: int, seconds: float, oldest_wait: float, gas_used: int | None) -> None:
    """Count a mined batch: its size, how long it took to be mined, and its gas per reading when known."""
    BATCHES.inc()
    BATCH_SIZE.observe(size)
    BATCH_MINED_SECONDS.observe(seconds)
    BATCH_WAIT_SECONDS.observe(oldest_wait)
    if gas_used is not None and size:
        BATCH_GAS_PER_READING.observe(gas_used / size)


def demand_response_event(event: ChainEvent) -> None:
    """Count a demand-response contract event, and the credit it applied."""
    DR_EVENTS.labels(event=event.name).inc()
    if event.name == "CreditApplied":
        DR_CREDIT.inc(int(event.args["amount"]))


class EventCounter:
    """A relay follower that counts the billing contract's events (each when first seen), and times blocks with
    recorded readings from first seen to final."""

    def __init__(self) -> None:
        #: Blocks with recorded readings not final yet, and when each was first seen (monotonic seconds).
        self._unfinal: dict[int, float] = {}

    def on_event(self, event: ChainEvent) -> None:
        """Count one event, and a recorded reading as such."""
        CHAIN_EVENTS.labels(event=event.name).inc()
        if event.name == "ReadingRecorded":
            READINGS_RECORDED.inc()
            self._unfinal.setdefault(event.block, time.monotonic())

    def on_final(self, block: int) -> None:
        """Time the blocks that just became final."""
        now = time.monotonic()
        for number in [b for b in self._unfinal if b <= block]:
            READINGS_FINAL_SECONDS.observe(now - self._unfinal.pop(number))

    def on_rollback(self, fork: int, deep: bool) -> None:
        """Forget the replaced blocks (counters keep what was seen, replaced blocks' events included)."""
        for number in [b for b in self._unfinal if b > fork]:
            del self._unfinal[number]


class ServerCollector(Collector):
    """The gauges read from the running server at each scrape (after ``refresh``, which asks the chain)."""

    def __init__(self, health: HealthCheck, chain: AsyncChainClient, batch_max_size: int,
                 sender_chain: Callable[[], AsyncChainClient | None]) -> None:
        """``health``: the parts ``/health`` reads; ``chain``: the server's client in this loop (the key's balance and
        the fees); ``sender_chain``: the batcher's client while it runs (its replaced and resent transactions)."""
        self.health = health
        self.chain = chain
        self.batch_max_size = batch_max_size
        self.sender_chain = sender_chain
        self._head: int | None = None
        self._funds: tuple[float, int | None, int | None] | None = None

    async def refresh(self) -> None:
        """Ask the chain for its head (shared with ``/health``) and, at most every ``FUNDS_TTL``, the key's funds."""
        self._head = (await self.health.probe_chain()).latest_block
        now = time.monotonic()
        if self._funds is not None and now - self._funds[0] < FUNDS_TTL:
            return
        balance: int | None = None
        max_fee: int | None = None
        try:
            balance = int(await self.chain.request("eth_getBalance", [self.chain.account.address, "latest"]), 16)
            max_fee = (await self.chain.fees()).max_fee
        except (SmartMeterError, ConnectionError, OSError, ValueError):
            pass  # the chain is down or the fees above the ceiling: the gauges go missing, /health says why
        self._funds = (now, balance, max_fee)

    def collect(self) -> Iterator[Metric]:
        """The gauges, as things stand now."""
        health = self.health
        now = time.time()
        oldest = health.store.oldest_received_at()
        yield _gauge("smartmeter_queue_readings", "Readings in the gateway's queue (not yet final on chain).",
                     health.store.count())
        yield _gauge("smartmeter_queue_oldest_reading_age_seconds",
                     "Seconds the oldest reading in the queue has waited (0 when it is empty).",
                     0.0 if oldest is None else max(0.0, now - oldest))
        batcher = health.batcher
        yield _gauge("smartmeter_batcher_failures_in_a_row", "The batcher's failed attempts since its last success.",
                     batcher.failures_in_a_row)
        if batcher.last_batch_at is not None:
            yield _gauge("smartmeter_batcher_last_batch_timestamp_seconds",
                         "When a batch was last mined and taken off the queue (Unix time).", batcher.last_batch_at)
        parts = GaugeMetricFamily("smartmeter_part_up", "Whether a supervised part of the server runs (1) or not (0).",
                                  labels=["part"])
        restarts = CounterMetricFamily("smartmeter_part_restarts", "Times a supervised part was started again.",
                                       labels=["part"])
        for name, part in sorted(health.parts.items()):
            parts.add_metric([name], 1.0 if part.running else 0.0)
            restarts.add_metric([name], part.restarts)
        yield parts
        yield restarts
        relay, head = health.relay, self._head
        if head is not None and relay.head is not None:
            head = max(head, relay.head)  # the probe is shared with /health and may be a second or two old
        yield _gauge("smartmeter_chain_reachable", "Whether the chain's node answered the last probe.",
                     0.0 if head is None else 1.0)
        yield _gauge("smartmeter_relay_connected", "Whether the relay is connected to the chain's WebSocket.",
                     1.0 if relay.connected.is_set() else 0.0)
        position = health.index.position()
        index_block = position[0] if position else None
        for name, text, value in (
                ("smartmeter_chain_head_block", "The chain's latest block.", head),
                ("smartmeter_relay_block", "The newest block the relay has read.", relay.head),
                ("smartmeter_final_block", "The newest block the relay holds final (CONFIRMATIONS deep).", relay.final),
                ("smartmeter_index_block", "The block of the index's newest event.", index_block)):
            if value is not None:
                yield _gauge(name, text, value)
        if head is not None:
            for name, text, value in (
                    ("smartmeter_relay_lag_blocks", "Blocks the relay is behind the chain's head.", relay.head),
                    ("smartmeter_final_lag_blocks", "Blocks between the chain's head and the final block.",
                     relay.final)):
                if value is not None:
                    yield _gauge(name, text, max(0, head - value))
        yield _gauge("smartmeter_index_backlog_events", "Events handed to the indexer and not yet applied.",
                     health.indexer.backlog)
        if health.gateway is not None:
            workers, up, connected = health.gateway()
            yield _gauge("smartmeter_meters_connected", "Meters logged in on the gateway.", connected)
            yield _gauge("smartmeter_gateway_processes", "Processes meant to serve the meters' port.", workers)
            yield _gauge("smartmeter_gateway_processes_up", "Processes serving the meters' port.", up)
        sender = self.sender_chain()
        if sender is not None:
            yield _counter("smartmeter_transactions_replaced",
                           "Batch transactions replaced at higher fees after waiting (since the batcher started).",
                           sender.replaced)
            yield _counter("smartmeter_transactions_resent",
                           "Batch transactions sent again after the node dropped them (since the batcher started).",
                           sender.resent)
        yield from self._funds_gauges()

    def _funds_gauges(self) -> Iterator[Metric]:
        if self._funds is None:
            return
        _, balance, max_fee = self._funds
        if balance is not None:
            yield _gauge("smartmeter_gateway_balance_ether", "The gateway key's balance, which pays for the batches.",
                         balance / 1e18)
        if max_fee is not None:
            yield _gauge("smartmeter_max_fee_gwei", "The most a batch transaction would pay per gas now (gwei).",
                         max_fee / 1e9)
            if balance is not None:
                per_batch = gas_limit_for(self.batch_max_size) * max(max_fee, 1)
                yield _gauge("smartmeter_gateway_batches_affordable",
                             "Full batches the gateway key's balance pays for at the current fees.",
                             balance // per_batch)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


class Exposition(Collector):
    """What ``/metrics`` renders: this process's metrics, the gauges of the server, the gateway workers' counters;
    families of one name from several sources are added up into one."""

    def __init__(self, collectors: Iterable[Collector | MultiProcessCollector]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        """Every family once, samples with the same name and labels summed."""
        merged: dict[str, Metric] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for collector in self.collectors:
            for family in collector.collect():
                merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
                totals = sums.setdefault(family.name, {})
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    totals[key] = totals.get(key, 0.0) + sample.value
        for name, family in merged.items():
            for (sample_name, labels), value in sums[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family

    def render(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self)


def exposition(server: ServerCollector | None, workers_dir: Path | None) -> Exposition:
    """The exposition of this process's registry, plus the server's gauges and the workers' counters if given."""
    collectors: list[Any] = [REGISTRY]
    if server is not None:
        collectors.append(server)
    if workers_dir is not None and workers_dir.is_dir():
        collectors.append(MultiProcessCollector(None, path=str(workers_dir)))  # type: ignore[no-untyped-call]
    return Exposition(collectors)


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[dict[str, Any]], Awaitable[None]]],
                   Awaitable[None]]


class RequestMetrics:
    """ASGI middleware counting HTTP requests by method, route template (``/api/v1/meters/{address}``) and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Pass the request on; count it when its answer starts (a stream such as the live feed counts then)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                HTTP_REQUESTS.labels(method=scope["method"], route=template, status=str(message["status"])).inc()
                HTTP_SECONDS.observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, counting_send)
