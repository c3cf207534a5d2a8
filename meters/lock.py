"""One process per meter: an exclusive lock on the meter's data folder.

Two processes started for one meter would fight over its login at the gateway (each new login
replaces the other's connection) and share its outbox. The first takes an exclusive ``flock``
on ``<meter folder>/meter.lock`` and writes its process id there; a second finds the lock
held, reads who holds it and refuses to start, before it opens the log, the outbox or the
status file, so the first is left undisturbed. The kernel releases the lock when its holder
exits, however it exits (a SIGKILL too), so a stale lock cannot keep a meter from starting.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType

from common.errors import AlreadyRunning

__all__ = ["LOCK_FILE", "MeterLock"]

LOCK_FILE = "meter.lock"


class MeterLock:
    """The exclusive lock on one meter's folder, held from ``acquire`` until ``release`` or exit."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / LOCK_FILE
        self.name = name
        self._fd: int | None = None

    def acquire(self, what: str = "meter") -> MeterLock:
        """Take the lock, recording this process; raises AlreadyRunning naming the holder if it is taken.

        ``what`` says who holds it (``meter``, ``provisioning``), for the refusal's sentence.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder, pid = _holder(fd)
            os.close(fd)
            raise AlreadyRunning(f"{self.name} is already in use by {holder}; leave it running, or stop it "
                                 f"first (kill {pid if pid else 'that process'})") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": what, "since": int(time.time())}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays; only the lock matters)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> MeterLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> tuple[str, int | None]:
    """Who holds the lock, as a phrase (``meter process 1234 (running since ...)``), and its process id."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid, what, since = int(record["pid"]), str(record.get("what", "meter")), int(record.get("since", 0))
    except (ValueError, KeyError, TypeError):
        return "another process (it is still starting)", None
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "an unknown time"
    return f"{what} process {pid} (running since {started})", pid
