"""A gateway worker process (``GATEWAY_WORKERS`` > 1): the meters' endpoint on the shared port.

It runs the same ``Gateway`` as a single-process server, on its own event loop with its own
chain client (for the login's look-ups) and a connection to the shared queue, listening with
``SO_REUSEPORT``. ``MainLink`` is its ``Upstream``: logins, opt-outs and commits go to the main
process over the control link, and the main process's messages for the meters (bills, alerts,
events) come back over it to the worker's hub. It ignores Ctrl-C (the main process tells it to
stop, after its own shutdown began) and stops by itself when the main process goes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from common import errors
from common.chain import AsyncChainClient
from common.deployment import Deployment
from common.logs import log_event, setup_logging
from common.messages import OptOut, OptOutWithdrawal, TariffInfo, encode
from common.settings import Settings, split_urls
from server import metrics
from server.control import LINE_LIMIT, MAIN_OPS, frame, unframe
from server.gateway import Gateway
from server.hub import Hub
from server.store import Store
from server.tls import ensure_tls, server_context, small_tls_buffers
from server.upstream import LoginContext
from server.validation import Cursor

__all__ = ["worker_main", "MainLink"]

log = logging.getLogger("worker")

#: How long a login waits for the main process's answer before the meter is told to try again.
LOGIN_ANSWER_TIMEOUT = 15.0


class MainLink:
    """The main process, as the worker's gateway sees it (an ``Upstream``), and the dispatch of what it sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hub: Hub, store: Store) -> None:
        self.reader = reader
        self.writer = writer
        self.hub = hub
        self.store = store
        #: The final block as the main process last told it (None until it has read the chain).
        self.final: int | None = None
        self.stopping = asyncio.Event()
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: Told that a meter's register and sequence restarted on chain (the worker's gateway's cursors).
        self.on_restart: Callable[[str, Cursor], None] | None = None

    def _write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def run(self) -> None:
        """Carry out what the main process sends until it says stop or its link goes."""
        try:
            while line := await self.reader.readline():
                self._on_line(unframe(line, MAIN_OPS))
                if self.stopping.is_set():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for answer in self._answers.values():
                if not answer.done():
                    answer.set_exception(errors.GatewayUnavailable(
                        "this gateway worker lost its link to the main server; reconnect in a moment"))

    def _on_line(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "send":
            self.hub.send(str(msg["meter"]), str(msg["message"]))
        elif op == "state":
            self.store.recount(int(msg["queued"]))
            self.final = None if msg.get("final") is None else int(msg["final"])
        elif op in ("login_ok", "login_failed"):
            answer = self._answers.pop(int(msg["id"]), None)
            if answer is not None and not answer.done():
                answer.set_result(msg)
        elif op == "close":
            peer = self.hub.peers.get(str(msg["meter"]).lower())
            if peer is not None:
                task = asyncio.get_running_loop().create_task(
                    peer.outlet.close(int(msg.get("code", 1000)), str(msg.get("reason", ""))))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        elif op == "restart" and self.on_restart is not None:
            self.on_restart(str(msg["meter"]), Cursor(int(msg["seq"]), int(msg["timestamp"]), int(msg["energy_wh"]),
                                                      int(msg["export_wh"])))
        elif op == "stop":
            self.stopping.set()

    # ---------------------------------------------------------------- Upstream

    async def login(self, meter: str, region: str, version: int) -> LoginContext:
        """Register the meter with the main process; what it is told after ``welcome``."""
        number = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[number] = answer
        self._write(frame("login", id=number, meter=meter, region=region, version=version))
        try:
            msg = await asyncio.wait_for(answer, LOGIN_ANSWER_TIMEOUT)
        except asyncio.TimeoutError:
            raise errors.GatewayUnavailable("the main server did not answer this login in time; reconnect in "
                                            "a moment") from None
        finally:
            self._answers.pop(number, None)
        if msg["op"] == "login_failed":
            raise errors.error_for_code(str(msg["code"]), str(msg["message"]))
        final_at = msg["final_at"]
        return LoginContext(TariffInfo.model_validate(msg["tariff"]),
                            final_at if final_at == "latest" else int(final_at), list(msg["preface"]))

    def logout(self, meter: str) -> None:
        """Tell the main process the meter's connection went."""
        self._write(frame("logout", meter=meter))

    def settled(self, meter: str, seq: int) -> bool:
        """Whether the queued reading was mined in a block the main process counts as final."""
        mined = self.store.mined_block(meter, seq)
        return mined is not None and self.final is not None and mined <= self.final

    def opt_out(self, msg: OptOut | OptOutWithdrawal, meter: str, region: str) -> str | None:
        """Pass the opt-out to the main process, which checks and relays it and answers through the hub."""
        self._write(frame("opt_out", meter=meter, region=region, message=encode(msg)))
        return None

    def queued(self, count: int) -> None:
        """Tell the main process (its batcher takes them; it counts the queue)."""
        self._write(frame("queued", count=count))


class _Tagged(logging.Filter):
    """Adds ``worker=N`` to every structured line of a worker process."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag the line; never drops one."""
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and "worker" not in fields:
            record.fields = {**fields, "worker": self.number}
        return True


def worker_main(settings: Settings, deployment: Deployment, number: int, port: int, token: str, log_level: str,
                log_path: str | None) -> None:
    """The worker process's entry point (``multiprocessing``, spawned by ``server.workers.WorkerPool``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process, which stops the workers
    setup_logging(log_level, path=log_path)
    metrics.count_in_files(settings.data_dir)  # before the gateway counts: the main process adds the files up
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tagged(number))
    try:
        asyncio.run(_run(settings, deployment, number, port, token))
    except Exception as err:  # noqa: BLE001 - the main process gets the reason; the exit code says it failed
        log_event(log, "gateway_worker_failed", logging.ERROR, worker=number,
                  error=f"{type(err).__name__}: {err}"[:500])
        raise SystemExit(1) from None


async def _run(settings: Settings, deployment: Deployment, number: int, port: int, token: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=LINE_LIMIT)
    writer.write(frame("hello", token=token, worker=number, pid=os.getpid()))
    small_tls_buffers()
    store = Store(settings.data_dir / "gateway" / "queue.sqlite")
    chain = AsyncChainClient(settings, deployment, settings.gateway_key)
    hub = Hub()
    link = MainLink(reader, writer, hub, store)
    tls = server_context(ensure_tls(settings.data_dir / "tls", split_urls(settings.tls_hosts)))
    gateway = Gateway(settings, deployment, chain, store, hub, link, tls, reuse_port=True)
    link.on_restart = gateway.restarted
    try:
        try:
            server = await gateway.start()
        except OSError as err:
            writer.write(frame("failed", reason=f"cannot listen on {settings.server_url}: {err}"))
            await writer.drain()
            raise
        writer.write(frame("listening"))
        log_event(log, "gateway_worker_started", worker=number, pid=os.getpid())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, link.stopping.set)
        following = loop.create_task(link.run())
        stopping = loop.create_task(link.stopping.wait())
        closed = loop.create_task(server.wait_closed())
        await asyncio.wait({following, stopping, closed}, return_when=asyncio.FIRST_COMPLETED)
        if not link.stopping.is_set():
            log_event(log, "gateway_worker_orphaned", logging.WARNING, worker=number,
                      action="the main server's link went; closing this worker's connections and exiting")
        for task in (following, stopping, closed):
            task.cancel()
        await gateway.close()
        log_event(log, "gateway_worker_stopped", worker=number, readings=gateway.stats["readings"])
    finally:
        store.close()
        await chain.close()
        writer.close()
