"""Keeps the server's long-running parts running, and tells the server at once when one ends.

A part kept running (the batcher, the relay, the indexer) that fails with an exception is
started again after a back-off (``common.backoff``): ``task_failed`` is logged with the error
the moment it happens, ``task_restarted`` when it starts again, and its ``PartStatus`` counts
restarts and failures in a row, which ``/health`` reports (a part that keeps failing is down).
A part returns only when it was told to stop, so a return is final. Any watched task that ends
before the server is stopping (a part's return, the HTTP server, the gateway) is logged at once
and reported by ``ended``, which the server's main loop waits on next to its signals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.backoff import Backoff
from common.logs import log_event

__all__ = ["Supervisor", "PartStatus", "Ended", "describe"]

log = logging.getLogger("supervisor")

#: Waits before starting a failed part again: from this, doubling, up to the cap (seconds).
RESTART_FIRST, RESTART_CAP = 1.0, 30.0
#: A part that ran this long since it was last started no longer counts its earlier failures (seconds).
STABLE_AFTER = 60.0
#: Failures in a row after which a part is reported down rather than restarting.
DOWN_AFTER = 3


def describe(err: BaseException | None) -> str:
    """An error as one short line for logs and ``/health``."""
    if err is None:
        return "it returned"
    return f"{type(err).__name__}: {err}"[:300]


@dataclass
class PartStatus:
    """What the supervisor knows of one part, read by ``/health``."""

    name: str
    running: bool = False
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None
    last_failed_at: float | None = None
    #: The part ended for good (returned, or the server is stopping).
    ended: bool = False
    down_after: int = DOWN_AFTER

    @property
    def keeps_failing(self) -> bool:
        """Whether the part failed ``down_after`` times without running steadily in between."""
        return self.failures_in_a_row >= self.down_after


@dataclass(frozen=True)
class Ended:
    """A watched task that ended while the server was not stopping."""

    name: str
    error: str

    def sentence(self) -> str:
        """What happened and what to do, for the operator."""
        return (f"the server's {self.name} task ended unexpectedly ({self.error}); the server stopped so that "
                "nothing runs half-working: see its log, then start it again")


class Supervisor:
    """Runs the server's tasks, restarts the parts that fail and reports any task that ends too early."""

    def __init__(self, first: float = RESTART_FIRST, cap: float = RESTART_CAP, stable_after: float = STABLE_AFTER,
                 down_after: int = DOWN_AFTER) -> None:
        self.first = first
        self.cap = cap
        self.stable_after = stable_after
        self.down_after = down_after
        self.parts: dict[str, PartStatus] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self._stopped = asyncio.Event()
        self._ended: asyncio.Future[Ended] = asyncio.get_running_loop().create_future()

    def keep_running(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``run()`` as a task called ``name``, starting it again with back-off whenever it fails."""
        status = PartStatus(name, down_after=self.down_after)
        self.parts[name] = status
        task = asyncio.get_running_loop().create_task(self._keep(status, run), name=name)
        self.watch(task)
        return task

    def watch(self, task: asyncio.Task[None]) -> None:
        """Report ``task`` through ``ended`` if it ends before ``stop``."""
        self.tasks.append(task)
        task.add_done_callback(self._on_done)

    def stop(self) -> None:
        """The server is stopping: tasks may end now, and failed parts are not started again."""
        self.stopping = True
        self._stopped.set()

    async def ended(self) -> Ended:
        """Wait until a watched task ends before ``stop``; the first one to do so."""
        return await asyncio.shield(self._ended)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if self.stopping:
            return
        err = None if task.cancelled() else task.exception()
        status = self.parts.get(task.get_name())
        if status is not None:
            status.running, status.ended = False, True
        reason = "it was cancelled" if task.cancelled() else describe(err)
        log_event(log, "task_ended", logging.ERROR, task=task.get_name(), error=reason,
                  action="the server stops; see the lines before this one, then start it again")
        if not self._ended.done():
            self._ended.set_result(Ended(task.get_name(), reason))

    async def _keep(self, status: PartStatus, run: Callable[[], Awaitable[None]]) -> None:
        """Run one part until it returns or the server stops, restarting it after each failure."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.first, self.cap)
        while True:
            status.running = True
            steady = loop.call_later(self.stable_after, self._steady, status, backoff)
            try:
                await run()
            except Exception as err:  # noqa: BLE001 - any failure of a part is logged and the part started again
                error: BaseException | None = err
            else:
                error = None
            finally:
                steady.cancel()
                status.running = False
            if error is None:
                status.ended = True
                return  # a part returns only when told to stop (``_on_done`` reports it if the server was not)
            status.last_error, status.last_failed_at = describe(error), time.time()
            if self.stopping:
                status.ended = True
                log_event(log, "task_failed", logging.ERROR, task=status.name, error=status.last_error,
                          action="not restarted: the server is stopping")
                return
            delay = backoff.failed()
            status.failures_in_a_row = backoff.failures
            log_event(log, "task_failed", logging.ERROR, task=status.name, error=status.last_error,
                      failures_in_a_row=status.failures_in_a_row, restart_in=f"{delay:.1f}s",
                      action="restarting it; if it keeps failing, see the error and the lines before this one")
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            if self.stopping:
                status.ended = True
                return
            status.restarts += 1
            log_event(log, "task_restarted", logging.WARNING, task=status.name, restarts=status.restarts,
                      after=status.last_error)

    @staticmethod
    def _steady(status: PartStatus, backoff: Backoff) -> None:
        """The part has run long enough since its last start: its earlier failures no longer count."""
        backoff.succeeded()
        status.failures_in_a_row = 0
