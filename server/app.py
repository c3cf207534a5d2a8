"""Assembles the server (gateway, batcher, relay, indexer, REST API and dashboard) into one
asyncio process and runs it until SIGINT or SIGTERM, then shuts down in order: stop
accepting, finish the batch in flight, close connections with 1001, stop the relay, apply
what the indexer has queued, close the databases."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import signal
from dataclasses import dataclass

from common.chain import AsyncChainClient
from common.customers import Customers
from common.deployment import Deployment, load_deployment
from common.eip712 import checksum_address
from common.errors import ChainUnavailable
from common.logs import log_event
from common.messages import TariffInfo
from common.settings import Settings
from server.api import ApiContext, HttpServer, create_api
from server.api.auth import Authenticator
from server.batcher import Batcher
from server.conversations import Conversations
from server.gateway import Gateway
from server.hub import Hub
from server.index import Index
from server.indexer import Indexer
from server.live import LiveFeed
from server.monitor import Rules
from server.relay import Relay
from server.store import Store
from server.tls import ensure_tls, server_context

__all__ = ["ServerApp", "run", "open_index", "open_conversations"]

log = logging.getLogger("server")
SHUTDOWN_GRACE = 30.0
#: asyncio allocates a 256 KiB TLS read buffer per connection (``SSLProtocol.max_size``), which
#: dominates the gateway's memory with thousands of idle meters; a TLS record is at most 16 KiB,
#: so 32 KiB loses nothing but a few more read calls under load.
TLS_READ_BUFFER = 32 * 1024


def open_index(settings: Settings, deployment: Deployment) -> Index:
    """The index database under ``DATA_DIR/index/`` for ``deployment``, with the consumption-alert settings."""
    rules = Rules(jump_factor=settings.jump_factor, jump_min_w=settings.jump_min_w)
    return Index(settings.data_dir / "index" / "index.sqlite", settings.tz, rules, settings.hourly_limit_wh,
                 source=f"{deployment.chain_id}:{deployment.address.lower()}:{deployment.block}")


def open_conversations(settings: Settings) -> Conversations:
    """The customers' and operator's messages, ``DATA_DIR/api/messages.sqlite``: personal data, kept apart from the
    index (which is rebuilt from the chain) so it can be exported or erased on its own."""
    return Conversations(settings.data_dir / "api" / "messages.sqlite", max_chars=settings.message_max_chars,
                         rate_per_minute=settings.message_rate_per_minute,
                         max_per_account=settings.message_max_per_account)


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
    gateway: Gateway
    index: Index
    indexer: Indexer
    feed: LiveFeed
    http: HttpServer | None
    tasks: list[asyncio.Task[None]]
    conversations: Conversations | None = None

    @classmethod
    async def start(cls, settings: Settings, deployment: Deployment | None = None) -> ServerApp:
        """Build every part and start them; returns once the gateway listens."""
        deployment = deployment or load_deployment(settings)
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        tls = ensure_tls(settings.data_dir / "tls")
        store = Store(settings.data_dir / "gateway" / "queue.sqlite")
        chain = AsyncChainClient(settings, deployment, settings.gateway_key)
        try:
            chain_id = await chain.call("chain_id", lambda: chain.w3.eth.chain_id)
            raw_tariff = await chain.call("tariff", lambda: chain.contract.functions.tariff().call())
        except ChainUnavailable:
            store.close()
            raise
        if chain_id != deployment.chain_id:
            store.close()
            raise ChainUnavailable(f"the node at {settings.chain_rpc_url} is chain {chain_id}, "
                                   f"not {deployment.chain_id} where the contract is recorded")
        tariff = TariffInfo(unit_rate=raw_tariff[0], standing_charge=raw_tariff[1], version=raw_tariff[3])
        hub = Hub()
        feed = LiveFeed()
        index = open_index(settings, deployment)
        indexer = Indexer(deployment, index, chain, hub, feed)
        http: HttpServer | None = None
        conversations: Conversations | None = None
        try:
            await indexer.catch_up()
            if settings.http_port:
                customers = Customers(settings.data_dir / "customers.json")
                auth = Authenticator(settings, deployment.domain, customers)
                conversations = open_conversations(settings)
                api = create_api(ApiContext(settings, deployment, index, auth, customers, feed, hub, conversations))
                http = HttpServer(api, settings.server_host, settings.http_port)
        except BaseException:
            if conversations is not None:
                conversations.close()
            index.close()
            store.close()
            await chain.close()
            raise
        hub.listeners.append(lambda meter, connected: feed.publish(
            "connection", meter, {"address": checksum_address(bytes.fromhex(meter[2:])), "connected": connected}))
        batcher = Batcher(chain, store, lambda: AsyncChainClient(settings, deployment, settings.gateway_key),
                          settings.batch_max_size, settings.batch_max_wait, settings.batch_pipeline)
        relay = Relay(settings, deployment, store, hub, tariff)
        relay.listeners.append(indexer.on_event)
        relay.mined_listeners.append(batcher.mined)
        gateway = Gateway(settings, deployment, chain, store, hub, batcher, relay, server_context(tls))
        await batcher.reconcile()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(relay.run(), name="relay"), loop.create_task(batcher.run(), name="batcher"),
                 loop.create_task(indexer.run(), name="indexer")]
        await gateway.start()
        if http is not None:
            http.start()
            log_event(log, "api_listening", url=settings.http_url, dashboard=settings.http_url + "/",
                      openapi=settings.http_url + "/api/v1/openapi.json")
        log_event(log, "server_started", contract=deployment.address, chain_id=chain_id,
                  meters_url=settings.server_url, queued=store.count())
        return cls(settings, deployment, store, hub, chain, batcher, relay, gateway, index, indexer, feed, http, tasks,
                   conversations)

    async def stop(self) -> None:
        """Shut down in order; the batch in flight is allowed to finish."""
        log_event(log, "server_stopping", queued=self.store.count())
        if self.http is not None:
            await self.http.stop()
        await self.gateway.close()
        self.batcher.stop()
        self.relay.stop()
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
        await self.chain.close()
        log_event(log, "server_stopped")


async def run(settings: Settings) -> None:
    """Run the server until SIGINT or SIGTERM."""
    app = await ServerApp.start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.stop()
