"""A gateway that holds no state (``SERVER_ROLE=gateway``): the meters' endpoint alone, on the bus.

It keeps only its connections. It reads a meter's state from the chain at login (and its last
reading still in the reading log), logs readings to JetStream before acknowledging them, and
passes on what the cores publish for its meters. Any number of them, on any machines, serve the
same meters: a meter may reconnect to any. Runs until SIGINT or SIGTERM, then closes its
connections with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from functools import partial

from nats.aio.client import Client

from common.chain import AsyncChainClient
from common.deployment import Deployment, load_deployment
from common.errors import ChainUnavailable
from common.logs import log_event
from common.settings import Settings, split_urls
from server import metrics
from server.bus.connection import connect, ensure_stream
from server.bus.gateway_link import BusUpstream
from server.bus.hub import Hub
from server.bus.reading_log import BusLog
from server.endpoint.gateway import Gateway
from server.endpoint.tls import ensure_tls, server_context, small_tls_buffers
from server.supervisor import Supervisor

__all__ = ["GatewayApp", "run_gateway"]

log = logging.getLogger("server")


@dataclass
class GatewayApp:
    """The running parts of a stateless gateway."""

    settings: Settings
    nc: Client
    chain: AsyncChainClient
    hub: Hub
    log: BusLog
    upstream: BusUpstream
    gateway: Gateway

    @classmethod
    async def start(cls, settings: Settings, deployment: Deployment | None = None,
                    reuse_port: bool = False) -> GatewayApp:
        """Connect to the bus and the chain, and listen for meters."""
        deployment = deployment or load_deployment(settings)
        small_tls_buffers()
        tls = ensure_tls(settings.data_dir / "tls", split_urls(settings.tls_hosts))
        chain = AsyncChainClient(settings, deployment, settings.gateway_key)
        nc: Client | None = None
        try:
            chain_id = await chain.call("chain_id", lambda: chain.w3.eth.chain_id)
            if chain_id != deployment.chain_id:
                raise ChainUnavailable(f"the node at {settings.chain_rpc_url} is chain {chain_id}, "
                                       f"not {deployment.chain_id} where the contract is recorded")
            nc = await connect(settings, "gateway")
            js = nc.jetstream()
            await ensure_stream(js, settings)
            hub = Hub()
            reading_log = BusLog(settings, nc, js)
            reading_log.start()
            upstream = BusUpstream(nc, hub)
            await upstream.start()
            gateway = Gateway(settings, deployment, chain, reading_log, hub, upstream, server_context(tls),
                              reuse_port=reuse_port)
            upstream.on_restart = gateway.restarted
            await gateway.start()
        except BaseException:
            if nc is not None:
                await nc.close()
            await chain.close()
            raise
        log_event(log, "gateway_started", contract=deployment.address, meters_url=settings.server_url,
                  bus=settings.bus_url)
        return cls(settings, nc, chain, hub, reading_log, upstream, gateway)

    async def stop(self) -> None:
        """Close the meters' connections (1001), then leave the bus and the chain."""
        await self.gateway.close()
        await self.upstream.close()
        await self.log.close()
        try:
            await self.nc.drain()
        except Exception:  # noqa: BLE001 - already gone
            pass
        await self.chain.close()
        log_event(log, "gateway_stopped", readings=self.gateway.stats["readings"],
                  duplicates=self.log.duplicates)


async def run_gateway(settings: Settings) -> str | None:
    """Run a stateless gateway until SIGINT or SIGTERM, or until its listener closes (returns why); with
    ``GATEWAY_WORKERS`` above 1, that many gateway processes on the one port."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.gateway_workers > 1:
        return await _run_pool(settings, stop)
    app = await GatewayApp.start(settings)
    assert app.gateway.server is not None
    closed = asyncio.ensure_future(app.gateway.server.wait_closed())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    closed.cancel()
    stopping.cancel()
    ended = not stop.is_set()
    await app.stop()
    return "the meters' listener closed" if ended else None



async def _run_pool(settings: Settings, stop: asyncio.Event) -> str | None:
    """Run ``GATEWAY_WORKERS`` gateway processes, each started again should it end, until ``stop`` or until one
    cannot be started again (returns why)."""
    from server.endpoint.workers import WorkerPool  # (it runs this module's GatewayApp in each process)

    metrics.clear_worker_files(settings.data_dir)  # the processes count into files there
    pool = WorkerPool(settings, load_deployment(settings), Hub())
    await pool.start()
    supervisor = Supervisor()
    tasks = [supervisor.keep_running(f"gateway_worker_{w.number}", partial(pool.keep, w.number))
             for w in pool.workers]
    stopping = asyncio.ensure_future(stop.wait())
    ending = asyncio.ensure_future(supervisor.ended())
    await asyncio.wait({stopping, ending}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    ending.cancel()
    supervisor.stop()
    await pool.close()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=5)
    log_event(log, "gateway_stopped", processes=len(pool.workers))
    return ending.result().sentence() if ending.done() and not ending.cancelled() else None
