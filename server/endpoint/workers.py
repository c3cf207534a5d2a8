"""Gateway processes on one machine (``GATEWAY_WORKERS`` > 1): N stateless gateways on the bus.

Each process is a ``GatewayApp`` (``server.bus.gateway_app``): TLS, login, the checks, and the
reading log on NATS JetStream, on the same meters' port as the others (``SO_REUSEPORT``: the
kernel spreads new connections over them). None of them is special and none talks to the main
process: logins, bills and alerts go over the bus, where the main process is a core (batcher,
relay, demand response, indexer, API). The main process only starts them, restarts one that
dies (its meters reconnect to any of them and resend what was not acknowledged) and stops them
with SIGTERM, on which they close their meters' connections with 1001 (going away).

Without ``BUS_URL`` the main process first starts a local nats-server (``start_local_bus``) from
the pinned package, its store under ``DATA_DIR/nats/``, fsync before every acknowledgement.

A process reports one thing back, over a pipe: that it listens, or why it could not. It exits
by itself when that pipe closes (the main process went).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from common import errors
from common.deployment import Deployment
from common.devchain import free_port
from common.logs import log_event, setup_logging
from common.settings import Settings
from server import metrics
from server.bus.hub import Hub
from server.bus.natsd import NatsConfig, NatsServer

__all__ = ["WorkerPool", "start_local_bus", "gateway_process_main"]

log = logging.getLogger("workers")

#: How long a gateway process may take to start listening (it imports the server's libraries, reaches the chain
#: and the bus first).
START_TIMEOUT = 90.0
#: How long a gateway process may take to close its connections and exit after SIGTERM.
STOP_TIMEOUT = 15.0


async def start_local_bus(settings: Settings) -> NatsServer:
    """A nats-server for this machine's gateway processes and core: loopback, free ports, JetStream under
    ``DATA_DIR/nats/`` with fsync before every acknowledgement (ConfigError with its log if it cannot start)."""
    node = NatsServer(NatsConfig(name="local", store_dir=settings.data_dir / "nats" / "jetstream",
                                 host="127.0.0.1", port=free_port(), http_port=free_port(), sync_always=True))
    await node.start_async()
    return node


@dataclass
class _Worker:
    number: int
    process: BaseProcess | None = None
    #: The main process's end of the process's report pipe.
    pipe: Connection | None = None
    listening: bool = False
    #: Resolved when the current process ends.
    exited: asyncio.Future[None] | None = None


class WorkerPool:
    """Starts, supervises and stops the gateway processes."""

    def __init__(self, settings: Settings, deployment: Deployment, hub: Hub) -> None:
        if not settings.bus_url:
            raise errors.ConfigError("gateway processes need the bus (BUS_URL, or the local nats-server)")
        self.settings = settings
        self.deployment = deployment
        #: The core's hub: every login goes through a core, so its meters are the meters connected.
        self.hub = hub
        self.workers = [_Worker(n) for n in range(1, settings.gateway_workers + 1)]
        self._stopping = False
        self._context = multiprocessing.get_context("spawn")

    async def start(self) -> None:
        """Start every gateway process and wait until each listens on the meters' port."""
        # The processes share the port with any socket of this user that also asks for SO_REUSEPORT (another
        # server's gateways): make sure nothing listens there yet, as binding it in one process would.
        socket.create_server((self.settings.server_host, self.settings.server_port)).close()
        try:
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
        except BaseException:
            await self.close()
            raise
        log_event(log, "gateway_workers_listening", workers=len(self.workers), url=self.settings.server_url,
                  bus=self.settings.bus_url,
                  pids=",".join(str(w.process.pid) for w in self.workers if w.process is not None))

    async def _spawn(self, worker: _Worker) -> None:
        """Start one gateway process and wait until it listens (raises ``ConfigError`` saying why it did not)."""
        worker.listening = False
        ours, theirs = self._context.Pipe(duplex=True)
        level, path = _logging_setup()
        process = self._context.Process(
            target=gateway_process_main, name=f"gateway-worker-{worker.number}", daemon=True,
            args=(self.settings, self.deployment, worker.number, theirs, level, path))
        # Not on the event loop: "spawn" writes the pickled arguments to a pipe the child reads only as it imports
        # the server's modules, which on a loaded machine blocks for seconds (and this loop is a core's, whose
        # leases and heartbeats must not wait).
        await asyncio.to_thread(process.start)
        theirs.close()
        if worker.pipe is not None:
            worker.pipe.close()
        worker.process, worker.pipe = process, ours
        self._watch_exit(worker, process)
        try:
            report = await asyncio.wait_for(self._report(worker), START_TIMEOUT)
        except asyncio.TimeoutError:
            process.kill()
            raise errors.ConfigError(f"gateway worker {worker.number} did not start listening within "
                                     f"{START_TIMEOUT:.0f} s; see its log lines") from None
        if report[0] != "listening":
            try:  # it exits after saying why
                await asyncio.wait_for(self._exit_of(worker), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                process.kill()
                await asyncio.to_thread(process.join, 5)
            raise errors.ConfigError(f"gateway worker {worker.number} could not start: {report[1]}")
        worker.listening = True

    async def _report(self, worker: _Worker) -> tuple[str, str]:
        """What the process reports: ``("listening", "")`` or ``("failed", why)`` (also when it exits first)."""
        assert worker.pipe is not None and worker.process is not None
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = worker.pipe.fileno()

        def on_readable() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, on_readable)
        exited = self._exit_of(worker)
        try:
            await asyncio.wait({readable, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(fd)
            exited.cancel()
        if readable.done():
            try:
                kind, why = worker.pipe.recv()
                return str(kind), str(why)
            except (EOFError, OSError):
                pass
        await asyncio.shield(self._exit_of(worker))
        return "failed", f"exit code {worker.process.exitcode}"

    def _exit_of(self, worker: _Worker) -> asyncio.Future[None]:
        assert worker.exited is not None
        return asyncio.ensure_future(asyncio.shield(worker.exited))

    @staticmethod
    def _watch_exit(worker: _Worker, process: BaseProcess) -> None:
        """Resolve ``worker.exited`` when the process ends (one reader on its sentinel, however many wait)."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        sentinel = process.sentinel

        def on_exit() -> None:
            loop.remove_reader(sentinel)
            process.join(1)  # the sentinel closes as the process exits, a moment before it can be reaped
            worker.listening = False
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(sentinel, on_exit)
        worker.exited = exited

    async def keep(self, number: int) -> None:
        """Supervise gateway process ``number``: wait for it to end (raising, so that the supervisor starts it
        again, unless the server is stopping)."""
        worker = self.workers[number - 1]
        if worker.process is None or worker.process.exitcode is not None:
            await self._spawn(worker)
        assert worker.process is not None
        await self._exit_of(worker)
        if not self._stopping:
            raise RuntimeError(f"gateway worker {number} (pid {worker.process.pid}) ended with exit code "
                               f"{worker.process.exitcode}; its meters reconnect to the other gateway processes")

    async def close(self) -> None:
        """SIGTERM every gateway process (each closes its meters' connections with 1001); kill one that does not
        exit in time."""
        self._stopping = True
        running = [w for w in self.workers if w.process is not None and w.process.exitcode is None]
        for worker in running:
            assert worker.process is not None
            worker.process.terminate()
        for worker in running:
            process = worker.process
            assert process is not None
            try:
                await asyncio.wait_for(self._exit_of(worker), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log_event(log, "gateway_worker_killed", logging.WARNING, worker=worker.number, pid=process.pid,
                          reason=f"it did not stop within {STOP_TIMEOUT:.0f} s")
                process.kill()
                await asyncio.to_thread(process.join, 5)
        for worker in self.workers:
            if worker.pipe is not None:
                worker.pipe.close()
                worker.pipe = None

    def listening(self) -> int:
        """How many gateway processes are running and listening on the meters' port."""
        return sum(1 for w in self.workers if w.listening and w.process is not None and w.process.exitcode is None)

    def serving(self) -> tuple[int, int]:
        """The processes meant to serve the meters' port, and how many do (for ``/health``)."""
        return len(self.workers), self.listening()

    def pids(self) -> dict[int, int]:
        """Worker number -> its process id (for the tests and the benchmark)."""
        return {w.number: w.process.pid for w in self.workers
                if w.process is not None and w.process.pid is not None and w.process.exitcode is None}


class _Tagged(logging.Filter):
    """Adds ``worker=N`` to every structured line of a gateway process."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag the line; never drops one."""
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and "worker" not in fields:
            record.fields = {**fields, "worker": self.number}
        return True


def _logging_setup() -> tuple[str, str | None]:
    """The root logger's level and log file, for a gateway process to log the same way."""
    root = logging.getLogger()
    path = next((h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)), None)
    return logging.getLevelName(root.level), path


def gateway_process_main(settings: Settings, deployment: Deployment, number: int, pipe: Connection,
                         log_level: str, log_path: str | None) -> None:
    """A gateway process's entry point (``multiprocessing`` "spawn", started by ``WorkerPool``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process, which stops the gateways
    setup_logging(log_level, path=log_path)
    metrics.count_in_files(settings.data_dir)  # before the gateway counts: the main process adds the files up
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tagged(number))
    try:
        asyncio.run(_serve(settings, deployment, number, pipe))
    except Exception as err:  # noqa: BLE001 - the main process gets the reason; the exit code says it failed
        log_event(log, "gateway_worker_failed", logging.ERROR, worker=number,
                  error=f"{type(err).__name__}: {err}"[:500])
        raise SystemExit(1) from None


async def _serve(settings: Settings, deployment: Deployment, number: int, pipe: Connection) -> None:
    from server.bus.gateway_app import GatewayApp

    try:
        app = await GatewayApp.start(settings, deployment, reuse_port=True)
    except OSError as err:
        _tell(pipe, "failed", f"cannot listen on {settings.server_url}: {err}")
        raise
    except errors.SmartMeterError as err:
        _tell(pipe, "failed", err.message)
        raise
    _tell(pipe, "listening", "")
    log_event(log, "gateway_worker_started", worker=number, pid=os.getpid())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    orphaned = asyncio.Event()
    loop.add_reader(pipe.fileno(), orphaned.set)  # nothing is ever sent this way: readable means closed
    assert app.gateway.server is not None
    waits = [loop.create_task(stop.wait()), loop.create_task(orphaned.wait()),
             loop.create_task(app.gateway.server.wait_closed())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    loop.remove_reader(pipe.fileno())
    if not stop.is_set():
        log_event(log, "gateway_worker_orphaned", logging.WARNING, worker=number,
                  action="the main server went; closing this process's connections and exiting")
    await app.stop()
    log_event(log, "gateway_worker_stopped", worker=number, readings=app.gateway.stats["readings"])
    pipe.close()


def _tell(pipe: Connection, kind: str, why: str) -> None:
    """Report to the main process (ignored if it went)."""
    try:
        pipe.send((kind, why[:500]))
    except OSError:
        pass

