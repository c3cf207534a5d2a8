"""The main process's side of gateway workers (``GATEWAY_WORKERS`` > 1).

Each worker is a process running the meters' endpoint (``server.worker``) on the same port
(``SO_REUSEPORT``: the kernel spreads new connections over them). It does TLS, framing, login and
the off-chain checks, and commits accepted readings to the shared queue (SQLite, WAL) before it
answers ``ack``, so an ``ack`` means what it means with one process. The main process keeps the
batcher, the relay, demand response, the indexer and the API, and serves the workers over a
loopback control link (``server.control``): a meter that logs in on a worker is registered in
the main process's hub with a ``RemoteOutlet``, so the relay's bills and alerts reach it on
whichever worker holds its connection. A worker that dies is started again by the supervisor;
its meters reconnect (to any worker) and resend what was not acknowledged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import multiprocessing
import secrets
import socket
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from common import errors
from common.deployment import Deployment
from common.logs import log_event
from common.messages import OptOut, OptOutWithdrawal, parse_message
from common.settings import Settings
from server.control import LINE_LIMIT, WORKER_OPS, frame, unframe
from server.hub import Hub
from server.store import Store
from server.upstream import InProcess
from server.validation import Cursor

__all__ = ["WorkerPool", "RemoteOutlet"]

log = logging.getLogger("workers")

#: How long a worker may take to start listening (it imports the server's libraries first).
START_TIMEOUT = 60.0
#: How long a worker may take to close its connections and exit when told to stop.
STOP_TIMEOUT = 15.0
#: How often the main process tells the workers the queue's size and the final block.
STATE_EVERY = 0.5


class _Link:
    """The control connection of one worker."""

    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.writer = writer
        self.outlets: dict[str, RemoteOutlet] = {}
        self.listening = asyncio.Event()
        self.failure: str | None = None

    def write(self, data: bytes) -> None:
        """Queue a line for the worker (dropped if the link is gone: the worker's meters are being removed)."""
        if not self.writer.is_closing():
            self.writer.write(data)


@dataclass(eq=False)
class RemoteOutlet:
    """A meter's connection held by a worker, as the main process's hub sees it."""

    link: _Link
    meter: str

    async def send(self, message: str) -> None:
        """Pass a message to the worker, waiting while its link's buffer is full."""
        self.link.write(frame("send", meter=self.meter, message=message))
        await self.link.writer.drain()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Ask the worker to close the meter's connection."""
        self.link.write(frame("close", meter=self.meter, code=code, reason=reason))


@dataclass
class _Worker:
    number: int
    process: BaseProcess | None = None
    link: _Link | None = None
    linked: asyncio.Event = field(default_factory=asyncio.Event)
    #: Resolved when the current process ends.
    exited: asyncio.Future[None] | None = None


class WorkerPool:
    """Starts, serves, supervises and stops the gateway worker processes."""

    def __init__(self, settings: Settings, deployment: Deployment, store: Store, hub: Hub,
                 upstream: InProcess) -> None:
        self.settings = settings
        self.deployment = deployment
        self.store = store
        self.hub = hub
        self.upstream = upstream
        self.workers = [_Worker(n) for n in range(1, settings.gateway_workers + 1)]
        self._token = secrets.token_hex(16)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._stopping = False
        self._state_task: asyncio.Task[None] | None = None
        self._context = multiprocessing.get_context("spawn")

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Open the control link, start every worker and wait until each listens on the meters' port."""
        # The workers share the port with any socket of this user that also asks for SO_REUSEPORT (another
        # server's workers): make sure nothing listens there yet, as binding it in one process would.
        socket.create_server((self.settings.server_host, self.settings.server_port)).close()
        self._server = await asyncio.start_server(self._serve_link, "127.0.0.1", 0, limit=LINE_LIMIT)
        self._port = self._server.sockets[0].getsockname()[1]
        try:
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
        except BaseException:
            await self.close()
            raise
        self._state_task = asyncio.get_running_loop().create_task(self._tell_state())
        log_event(log, "gateway_workers_listening", workers=len(self.workers), url=self.settings.server_url,
                  pids=",".join(str(w.process.pid) for w in self.workers if w.process is not None))

    async def _spawn(self, worker: _Worker) -> None:
        """Start one worker process and wait until it listens (raises ``ConfigError`` saying why it did not)."""
        from server.worker import worker_main

        worker.linked.clear()
        worker.link = None
        level, path = _logging_setup()
        process = self._context.Process(
            target=worker_main, name=f"gateway-worker-{worker.number}", daemon=True,
            args=(self.settings, self.deployment, worker.number, self._port, self._token, level, path))
        process.start()
        worker.process = process
        self._watch_exit(worker, process)
        try:
            await asyncio.wait_for(self._until_listening(worker), START_TIMEOUT)
        except asyncio.TimeoutError:
            process.kill()
            raise errors.ConfigError(f"gateway worker {worker.number} did not start listening within "
                                     f"{START_TIMEOUT:.0f} s; see its log lines") from None

    async def _until_listening(self, worker: _Worker) -> None:
        exited = asyncio.ensure_future(self._exit_of(worker))
        try:
            while True:
                linked = asyncio.ensure_future(worker.linked.wait())
                await asyncio.wait({linked, exited}, return_when=asyncio.FIRST_COMPLETED)
                linked.cancel()
                link = worker.link
                if link is not None:
                    listening = asyncio.ensure_future(link.listening.wait())
                    await asyncio.wait({listening, exited}, return_when=asyncio.FIRST_COMPLETED)
                    listening.cancel()
                    if link.listening.is_set():
                        return
                if exited.done():
                    why = link.failure if link is not None and link.failure else f"exit code {exited.result()}"
                    raise errors.ConfigError(f"gateway worker {worker.number} could not start: {why}")
        finally:
            exited.cancel()

    async def _exit_of(self, worker: _Worker) -> int | None:
        """Wait for the worker's process to end; its exit code."""
        assert worker.process is not None and worker.exited is not None
        await asyncio.shield(worker.exited)
        return worker.process.exitcode

    @staticmethod
    def _watch_exit(worker: _Worker, process: BaseProcess) -> None:
        """Resolve ``worker.exited`` when the process ends (one reader on its sentinel, however many wait)."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        sentinel = process.sentinel

        def on_exit() -> None:
            loop.remove_reader(sentinel)
            process.join(0)
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(sentinel, on_exit)
        worker.exited = exited

    async def keep(self, number: int) -> None:
        """Supervise worker ``number``: wait for its process to end (raising, so that the supervisor starts it
        again, unless the server is stopping)."""
        worker = self.workers[number - 1]
        if worker.process is None or worker.process.exitcode is not None:
            await self._spawn(worker)
        code = await self._exit_of(worker)
        if not self._stopping:
            raise RuntimeError(f"gateway worker {number} (pid {worker.process.pid if worker.process else '?'}) "
                               f"ended with exit code {code}; its meters reconnect to the other workers")

    async def close(self) -> None:
        """Tell every worker to close its meters' connections (1001) and exit; kill one that does not."""
        self._stopping = True
        if self._state_task is not None:
            self._state_task.cancel()
        for worker in self.workers:
            if worker.link is not None:
                worker.link.write(frame("stop"))
        for worker in self.workers:
            process = worker.process
            if process is None or process.exitcode is not None:
                continue
            try:
                await asyncio.wait_for(self._exit_of(worker), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log_event(log, "gateway_worker_killed", logging.WARNING, worker=worker.number, pid=process.pid,
                          reason=f"it did not stop within {STOP_TIMEOUT:.0f} s")
                process.kill()
                await asyncio.to_thread(process.join, 5)
        if self._server is not None:
            self._server.close()

    def listening(self) -> int:
        """How many workers are running and listening on the meters' port."""
        return sum(1 for w in self.workers if w.process is not None and w.process.exitcode is None
                   and w.link is not None and w.link.listening.is_set() and not w.link.writer.is_closing())

    def serving(self) -> tuple[int, int]:
        """The processes meant to serve the meters' port, and how many do (for ``/health``)."""
        return len(self.workers), self.listening()

    def pids(self) -> dict[int, int]:
        """Worker number -> its process id (for the tests and the benchmark)."""
        return {w.number: w.process.pid for w in self.workers
                if w.process is not None and w.process.pid is not None and w.process.exitcode is None}

    def meters_by_worker(self) -> dict[int, list[str]]:
        """Worker number -> the meters whose connection it holds."""
        return {w.number: sorted(w.link.outlets) if w.link is not None else [] for w in self.workers}

    # ---------------------------------------------------------------- the control link

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link: _Link | None = None
        try:
            hello = unframe(await reader.readline(), WORKER_OPS)
            number = int(hello.get("worker", 0))
            if (hello["op"] != "hello" or not hmac.compare_digest(str(hello.get("token", "")), self._token)
                    or not 1 <= number <= len(self.workers)):
                log_event(log, "control_link_refused", logging.WARNING, reason="not one of this server's workers")
                return
            worker = self.workers[number - 1]
            link = _Link(number, writer)
            worker.link = link
            worker.linked.set()
            log_event(log, "gateway_worker_linked", worker=number, pid=hello.get("pid"))
            while line := await reader.readline():
                await self._on_line(link, unframe(line, WORKER_OPS))
        except (ValueError, KeyError, TypeError) as err:
            log_event(log, "control_link_broken", logging.ERROR, worker=link.number if link else None,
                      error=str(err)[:300])
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if link is not None:
                self._unlink(link)
            writer.close()

    def _unlink(self, link: _Link) -> None:
        """A worker's link went: its meters are no longer connected, and what it queued is counted again."""
        for meter, outlet in list(link.outlets.items()):
            self.hub.remove(meter, outlet)
        link.outlets.clear()
        if not self._stopping:  # (when stopping, the queue may be closed already)
            self.store.recount()
            log_event(log, "gateway_worker_unlinked", logging.WARNING, worker=link.number)

    async def _on_line(self, link: _Link, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "queued":
            self.store.counted(int(msg["count"]))
            self.upstream.queued(int(msg["count"]))
        elif op == "login":
            await self._login(link, msg)
        elif op == "logout":
            meter = str(msg["meter"]).lower()
            outlet = link.outlets.pop(meter, None)
            if outlet is not None:
                self.hub.remove(meter, outlet)
        elif op == "opt_out":
            meter, opt_out = str(msg["meter"]), parse_message(str(msg["message"]))
            if isinstance(opt_out, (OptOut, OptOutWithdrawal)):
                refusal = self.upstream.opt_out(opt_out, meter, str(msg.get("region", "")))
                if refusal is not None:
                    self.hub.send(meter, refusal)
        elif op == "listening":
            link.listening.set()
        elif op == "failed":
            link.failure = str(msg.get("reason", ""))[:500]

    async def _login(self, link: _Link, msg: dict[str, Any]) -> None:
        """Register a meter that logged in on a worker, and answer with what it is told after ``welcome``."""
        meter, region, version = str(msg["meter"]).lower(), str(msg["region"]), int(msg["version"])
        outlet = RemoteOutlet(link, meter)
        link.outlets[meter] = outlet
        replaced = self.hub.add(meter, region, outlet, version)
        if replaced is not None and isinstance(replaced.outlet, RemoteOutlet) and replaced.outlet.link is not link:
            # The meter logged in again on another worker: the old connection goes, as it would in one process.
            replaced.outlet.link.outlets.pop(meter, None)
            await replaced.outlet.close(1000, "replaced by a newer login")
        try:
            context = await self.upstream.login(meter, region, version)
        except errors.SmartMeterError as err:
            if link.outlets.get(meter) is outlet:
                del link.outlets[meter]
            self.hub.remove(meter, outlet)
            link.write(frame("login_failed", id=msg["id"], code=err.code, message=err.message))
            return
        # Released and answered with no await between: the messages held for the meter follow the answer.
        self.hub.release(meter)
        link.write(frame("login_ok", id=msg["id"], tariff=context.tariff.model_dump(), final_at=context.final_at,
                         preface=context.preface))

    def restarted(self, meter: str, cursor: Cursor) -> None:
        """A relay listener: a meter's register and sequence restarted on chain; its cursor restarts in the store
        and in every worker's memory."""
        self.store.restart_cursor(meter, cursor)
        restart = frame("restart", meter=meter, seq=cursor.seq, timestamp=cursor.timestamp,
                        energy_wh=cursor.energy_wh, export_wh=cursor.export_wh)
        for worker in self.workers:
            if worker.link is not None:
                worker.link.write(restart)

    async def _tell_state(self) -> None:
        """Tell the workers, now and then, the queue's size (for their ``overloaded`` check) and the final block."""
        while True:
            state = frame("state", queued=self.store.count(), final=self.upstream.relay.final)
            for worker in self.workers:
                if worker.link is not None:
                    worker.link.write(state)
            await asyncio.sleep(STATE_EVERY)


def _logging_setup() -> tuple[str, str | None]:
    """The root logger's level and log file, for a worker to log the same way."""
    root = logging.getLogger()
    path = next((h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)), None)
    return logging.getLevelName(root.level), path
