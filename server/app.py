"""Assembles the server (gateway, batcher, relay, indexer, REST API and dashboard) into one
asyncio process and runs it until SIGINT or SIGTERM, then shuts down in order: stop
accepting, finish the batch in flight, close connections with 1001, stop the relay, apply
what the indexer has queued, close the databases.

The batcher, the relay and the indexer run under a ``Supervisor``, which starts one that fails
again with back-off; if any task of the server ends before it is told to stop (a part, the HTTP
server, the gateway), the server shuts down the same way and ``run`` says why."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
from websockets.asyncio.server import Server

from common.chain import AsyncChainClient
from common.customers import Customers
from common.deployment import Deployment, load_deployment
from common.eip712 import checksum_address
from common.errors import ChainUnavailable, ConfigError, StorageError
from common.logs import log_event
from common.settings import Settings, split_urls
from server import metrics
from server.api import ApiContext, HttpServer, create_api
from server.api.auth import Authenticator
from server.api.conversations import Conversations
from server.api.live import LiveFeed
from server.bus.connection import connect, ensure_leases, ensure_stream
from server.bus.core_link import BusCore, core_id
from server.bus.gateway_app import GatewayApp, run_gateway
from server.bus.hub import Hub
from server.bus.natsd import NatsServer
from server.bus.writer_feed import PartitionFeed
from server.endpoint.gateway import Gateway
from server.endpoint.tls import ensure_tls, server_context, small_tls_buffers
from server.endpoint.upstream import InProcess
from server.endpoint.workers import WorkerPool, start_local_bus
from server.health import HealthCheck
from server.indexing.index import Index
from server.indexing.index_db import DATABASE_ERRORS, describe_url
from server.indexing.indexer import Indexer
from server.indexing.monitor import Rules
from server.relay.dr_relay import DemandResponseRelay, OptOutRelayer
from server.relay.relay import Relay
from server.supervisor import Ended, Supervisor
from server.writer.batcher import Batcher
from server.writer.store import BUSY_TIMEOUT_MS, Store, queue_unusable

__all__ = ["ServerApp", "run", "open_index", "index_unusable", "open_conversations"]

log = logging.getLogger("server")
SHUTDOWN_GRACE = 30.0


def open_index(settings: Settings, deployment: Deployment) -> Index:
    """The index for ``deployment`` (in PostgreSQL at ``INDEX_URL``, else SQLite under ``DATA_DIR/index/``), with
    the consumption-alert settings."""
    rules = Rules(jump_factor=settings.jump_factor, jump_min_w=settings.jump_min_w)
    path = settings.data_dir / "index" / "index.sqlite"
    try:
        return Index(path, settings.tz, rules, settings.hourly_limit_wh,
                     source=f"{deployment.chain_id}:{deployment.address.lower()}:{deployment.block}",
                     journal=settings.finality_depth > 0, url=settings.index_url)
    except DATABASE_ERRORS as err:
        raise index_unusable(describe_url(settings.index_url) if settings.index_url else path, err) from err


def index_unusable(path: Path | str, err: Exception) -> StorageError:
    """The error, in plain words with what to do, for an index database that cannot be opened or read (``path``:
    the SQLite file, or the PostgreSQL database's URL without its password)."""
    if isinstance(err, psycopg.OperationalError):
        return StorageError(
            f"cannot use the API's index in PostgreSQL at {path} ({err}): check that the server runs and "
            "accepts connections there, that INDEX_URL names an existing database and a role that may create "
            "tables in it, and that the server has connections to spare")
    if isinstance(err, psycopg.Error):
        return StorageError(
            f"the API's index in PostgreSQL at {path} failed ({err}): it is a cache of the chain, so an empty "
            "database (dropdb and createdb) is rebuilt from the chain at the next start; hourly limits set "
            "through the API were kept only there and must be set again")
    if isinstance(err, sqlite3.OperationalError):
        return StorageError(
            f"cannot use the API's index {path} ({err}): check that the data directory is writable, that the disk is "
            "not full and that no other process (another server on the same DATA_DIR) holds the file")
    return StorageError(
        f"the API's index {path} is damaged ({err}): it is a cache of the chain, so move the file aside with its "
        f"-wal and -shm files (for example to {Path(path).name}.damaged) and start the server again, which rebuilds it "
        "from the chain; hourly limits set through the API were kept only there and must be set again")


def open_conversations(settings: Settings) -> Conversations:
    """The customers' and operator's messages, ``DATA_DIR/api/messages.sqlite``: personal data, kept apart from the
    index (a cache of the chain, rebuilt at will) so that it can be exported or erased on its own."""
    path = settings.data_dir / "api" / "messages.sqlite"
    try:
        return Conversations(path, max_chars=settings.message_max_chars,
                             rate_per_minute=settings.message_rate_per_minute,
                             max_per_account=settings.message_max_per_account)
    except sqlite3.DatabaseError as err:
        if isinstance(err, sqlite3.OperationalError):
            raise StorageError(
                f"cannot use the messages database {path} ({err}): check that the data directory is writable, that "
                "the disk is not full and that no other process (another server on the same DATA_DIR) holds the file"
            ) from err
        raise StorageError(
            f"the messages database {path} is damaged ({err}): it is not a cache, it holds the customers' messages; "
            "restore it from a backup, or move it aside with its -wal and -shm files (for example to "
            f"{path.name}.damaged) and start the server again with an empty one") from err


async def _check_gateway_role(chain: AsyncChainClient) -> None:
    """Refuse to start with a gateway key the contract would refuse every batch from."""
    role = (await chain.view("GATEWAY_ROLE"))[0]
    address = chain.account.address
    if not (await chain.view("hasRole", role, address))[0]:
        raise ConfigError(f"the gateway key ({address}) does not hold GATEWAY_ROLE on the contract at "
                          f"{chain.deployment.address}, so every batch would be refused; set GATEWAY_KEY to a key "
                          f"that does, or grant it with: scripts/meterctl.py gateway add {address}")


@dataclass
class ServerApp:
    """The running parts of the server."""

    settings: Settings
    deployment: Deployment
    store: Store
    hub: Hub
    chain: AsyncChainClient
    batcher: Batcher
    relay: Relay
    #: The meters' endpoint: in this process, or the gateway processes on the bus that serve it
    #: (``GATEWAY_WORKERS``); None for a core on the bus (``SERVER_ROLE=core``), whose meters are served by stateless
    #: gateways elsewhere.
    gateway: Gateway | WorkerPool | GatewayApp | None
    index: Index
    indexer: Indexer
    feed: LiveFeed
    http: HttpServer | None
    supervisor: Supervisor
    health: HealthCheck
    #: The parts kept running by the supervisor: relay, batcher, indexer.
    tasks: list[asyncio.Task[None]]
    conversations: Conversations | None = None
    demand_response: DemandResponseRelay | None = None
    #: On the bus: this core's side of the meter bus, and its partitions of the reading log.
    core: BusCore | None = None
    partitions: PartitionFeed | None = None
    #: The local nats-server this server started for its gateway processes (``GATEWAY_WORKERS`` without ``BUS_URL``).
    nats: NatsServer | None = None

    @classmethod
    async def start(cls, settings: Settings, deployment: Deployment | None = None,
                    busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> ServerApp:
        """Build every part and start them; returns once the gateway listens.

        ``busy_timeout_ms``: how long a write to the queue waits for another connection's lock.
        """
        deployment = deployment or load_deployment(settings)
        nats: NatsServer | None = None
        small_tls_buffers()
        tls = ensure_tls(settings.data_dir / "tls", split_urls(settings.tls_hosts))
        store = Store(settings.data_dir / "gateway" / "queue.sqlite", busy_timeout_ms=busy_timeout_ms)
        chain = AsyncChainClient(settings, deployment, settings.gateway_key)
        index: Index | None = None
        http: HttpServer | None = None
        conversations: Conversations | None = None
        core: BusCore | None = None
        partitions: PartitionFeed | None = None
        try:
            if settings.gateway_workers > 1 and not settings.bus_url:
                nats = await start_local_bus(settings)  # the gateway processes and this core meet on it
                settings = settings.replace(bus_url=nats.url)
            chain_id = await chain.call("chain_id", lambda: chain.w3.eth.chain_id)
            if chain_id != deployment.chain_id:
                raise ChainUnavailable(f"the node at {settings.chain_rpc_url} is chain {chain_id}, "
                                       f"not {deployment.chain_id} where the contract is recorded")
            await _check_gateway_role(chain)
            hub = Hub()
            feed = LiveFeed()
            index = open_index(settings, deployment)
            indexer = Indexer(deployment, index, chain, hub, feed)
            try:
                await indexer.catch_up()
            except DATABASE_ERRORS as err:
                raise index_unusable(index.location, err) from err
            opt_outs = OptOutRelayer(settings, deployment) if deployment.demand_response is not None else None
            if settings.http_port:
                customers = Customers(settings.data_dir / "customers.json")
                auth = Authenticator(settings, deployment.domain, customers)
                conversations = open_conversations(settings)
                api = create_api(ApiContext(settings, deployment, index, auth, customers, feed, hub, conversations,
                                            opt_outs))
                http = HttpServer(api, settings.server_host, settings.http_port)
            batcher = Batcher(chain, store, lambda: AsyncChainClient(settings, deployment, settings.gateway_key),
                              settings.batch_max_size, settings.batch_max_wait, settings.batch_pipeline)
            try:
                await batcher.reconcile()
            except sqlite3.DatabaseError as err:
                raise queue_unusable(store.path, err) from err
            relay = Relay(settings, deployment, store, hub, index)
            demand_response = (DemandResponseRelay(deployment, chain, hub, lambda: relay.final)
                               if deployment.demand_response is not None else None)
            upstream = InProcess(settings, chain, hub, batcher, relay, demand_response, opt_outs)
            gateway: Gateway | WorkerPool | GatewayApp | None = None
            server: Server | None = None
            if settings.bus_url:
                core, partitions = await _join_bus(settings, store, hub, upstream, batcher)
                if settings.server_role == "all" and settings.gateway_workers > 1:
                    metrics.clear_worker_files(settings.data_dir)
                    gateway = WorkerPool(settings, deployment, hub)
                    await gateway.start()
                elif settings.server_role == "all":
                    gateway = await GatewayApp.start(settings, deployment)
            else:
                gateway = Gateway(settings, deployment, chain, store, hub, upstream, server_context(tls))
                server = await gateway.start()
        except BaseException:
            if core is not None:
                await core.close()
                await core.nc.close()
            if http is not None:
                http.sock.close()
            if index is not None:
                index.close()
            if conversations is not None:
                conversations.close()
            store.close()
            await chain.close()
            if nats is not None:
                await nats.stop_async()
            raise
        hub.listeners.append(lambda meter, connected: feed.publish(
            "connection", meter, {"address": checksum_address(bytes.fromhex(meter[2:])), "connected": connected}))
        relay.followers.append(indexer)
        relay.followers.append(metrics.EventCounter())
        relay.mined_listeners.append(batcher.mined)
        relay.final_listeners.append(batcher.finalized)
        relay.rollback_listeners.append(batcher.rolled_back)
        if core is not None:
            relay.restart_listeners.append(core.restarted)  # every gateway on the bus is told
        elif isinstance(gateway, Gateway):
            relay.restart_listeners.append(gateway.restarted)
        supervisor = Supervisor()
        tasks = [supervisor.keep_running("relay", relay.run), supervisor.keep_running("batcher", batcher.run),
                 supervisor.keep_running("indexer", indexer.run)]
        if partitions is not None:
            tasks.append(supervisor.keep_running("partitions", partitions.run))
        if demand_response is not None:
            tasks.append(supervisor.keep_running("demand_response", demand_response.run))
        endpoint = gateway.gateway if isinstance(gateway, GatewayApp) else gateway
        health = HealthCheck(chain.request, deployment.chain_id, supervisor.parts, batcher, relay, indexer, store,
                             index, gateway=None if endpoint is None else
                             lambda: (*endpoint.serving(), len(endpoint.hub)))
        loop = asyncio.get_running_loop()
        if isinstance(gateway, WorkerPool):
            tasks += [supervisor.keep_running(f"gateway_worker_{w.number}", partial(gateway.keep, w.number))
                      for w in gateway.workers]
        elif isinstance(gateway, GatewayApp) and gateway.gateway.server is not None:
            supervisor.watch(loop.create_task(gateway.gateway.server.wait_closed(), name="gateway"))
        elif server is not None:
            supervisor.watch(loop.create_task(server.wait_closed(), name="gateway"))
        if http is not None:
            http.app.state.health = health
            http.app.state.metrics = metrics.ServerCollector(health, chain, settings.batch_max_size,
                                                             lambda: batcher.sender_chain)
            http.app.state.metrics_workers = (metrics.worker_files(settings.data_dir)
                                              if isinstance(gateway, WorkerPool) else None)
            http.start()
            assert http.task is not None
            supervisor.watch(http.task)
            log_event(log, "api_listening", url=settings.http_url, dashboard=settings.http_url + "/",
                      openapi=settings.http_url + "/api/v1/openapi.json")
        log_event(log, "server_started", contract=deployment.address, chain_id=chain_id,
                  meters_url=settings.server_url, gateway=chain.account.address, queued=store.count())
        return cls(settings, deployment, store, hub, chain, batcher, relay, gateway, index, indexer, feed, http,
                   supervisor, health, tasks, conversations, demand_response, core, partitions, nats)

    async def until(self, stop: asyncio.Event) -> Ended | None:
        """Wait for ``stop``, or for one of the server's tasks to end before it (returns which, and why)."""
        stopping = asyncio.ensure_future(stop.wait())
        ending = asyncio.ensure_future(self.supervisor.ended())
        try:
            await asyncio.wait({stopping, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            ending.cancel()
        return ending.result() if ending.done() and not ending.cancelled() else None

    async def stop(self) -> None:
        """Shut down in order; the batch in flight is allowed to finish."""
        log_event(log, "server_stopping", queued=self.store.count())
        self.supervisor.stop()
        if self.http is not None:
            await self.http.stop()
        if isinstance(self.gateway, GatewayApp):
            await self.gateway.stop()
        elif self.gateway is not None:
            await self.gateway.close()
        if self.partitions is not None:
            self.partitions.stop()
        self.batcher.stop()
        self.relay.stop()
        if self.demand_response is not None:
            self.demand_response.stop()
        feeders = [t for t in self.tasks if t.get_name() != "indexer"]
        await asyncio.wait(feeders, timeout=SHUTDOWN_GRACE)
        self.indexer.stop()  # after the relay, so that what it relayed last is indexed too
        done, pending = await asyncio.wait(self.tasks, timeout=SHUTDOWN_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log_event(log, "task_failed", logging.ERROR, task=task.get_name(), error=repr(task.exception()))
        self.store.close()
        self.index.close()
        if self.conversations is not None:
            self.conversations.close()
        if self.core is not None:
            await self.core.close()
            try:
                await self.core.nc.drain()
            except Exception:  # noqa: BLE001 - already gone
                pass
        await self.chain.close()
        if self.nats is not None:
            await self.nats.stop_async()  # last: the gateway processes and the core have left it
        log_event(log, "server_stopped")


async def _join_bus(settings: Settings, store: Store, hub: Hub, upstream: InProcess,
                    batcher: Batcher) -> tuple[BusCore, PartitionFeed]:
    """Put this core on the bus: it answers logins and writes the partitions of the reading log it leases. Readings
    its queue held from a previous run and had not sent go back to the log's owners (the log still has them)."""
    name = core_id()
    nc = await connect(settings, f"core-{name}")
    try:
        js = nc.jetstream()
        await ensure_stream(js, settings)
        leases = await ensure_leases(js, settings)
        dropped = store.drop_unsent(store.queued_meters())
        if dropped:
            log_event(log, "unsent_readings_left_to_the_log", readings=dropped)
        core = BusCore(nc, hub, upstream, name)
        await core.start()
    except BaseException:
        await nc.close()
        raise
    return core, PartitionFeed(settings, nc, js, leases, store, batcher, name)


async def run(settings: Settings) -> str | None:
    """Run the server until SIGINT or SIGTERM, or until one of its tasks ends unexpectedly (returns why)."""
    if settings.server_role == "gateway":
        return await run_gateway(settings)
    app = await ServerApp.start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ended = await app.until(stop)
    await app.stop()
    return None if ended is None else ended.sentence()
