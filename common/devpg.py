"""A throwaway PostgreSQL cluster for the tests and local trials: Debian's server binaries
(``/usr/lib/postgresql/<version>/bin``), a data folder in a temporary directory, 127.0.0.1 on a
free port and a Unix socket in the same folder, trust authentication for the local user only.

PostgreSQL refuses to run as root: as root the cluster belongs to an unprivileged account
(``nobody`` unless ``user`` names another) and ``initdb`` and ``pg_ctl`` run as it through
``runuser``; the folder is given to that account. Start and stop are bounded in time.

    python -m common.devpg        # start one, print its INDEX_URL, stop it on Ctrl-C
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from common.devchain import free_port

__all__ = ["DevPostgres", "postgres_bindir", "POSTGRES_MISSING"]

#: What to do when the server binaries are missing.
POSTGRES_MISSING = ("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: install Debian's postgresql "
                    "package (scripts/bootstrap.sh --browser does) or set POSTGRES_BINDIR")


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: ``POSTGRES_BINDIR``, Debian's newest version, or the PATH."""
    if os.environ.get("POSTGRES_BINDIR"):
        return Path(os.environ["POSTGRES_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class DevPostgres:
    """One PostgreSQL cluster in its own temporary folder, for as long as it is started."""

    def __init__(self, port: int | None = None, user: str = "nobody", timeout: float = 60.0) -> None:
        """Prepare (nothing runs until ``start``)."""
        bindir = postgres_bindir()
        if bindir is None or not (bindir / "initdb").exists():
            raise RuntimeError(POSTGRES_MISSING)
        self.bindir = bindir
        self.port = port or free_port()
        self.timeout = timeout
        self.as_root = os.geteuid() == 0
        self.user = user if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        # Not under a root-only folder (pytest's): the cluster's account must reach it.
        self.base = Path(tempfile.mkdtemp(prefix="devpg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.started = False

    @property
    def admin_url(self) -> str:
        """The URL of the ``postgres`` database, as the cluster's superuser."""
        return self.url("postgres")

    def url(self, database: str) -> str:
        """The URL of one database of the cluster (TCP on 127.0.0.1)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float | None = None) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout or self.timeout,
                              cwd=self.base, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                               f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    def start(self) -> Self:
        """Make the cluster and start its server; waits until it accepts connections."""
        if self.as_root:
            account = pwd.getpwnam(self.user)
            os.chown(self.base, account.pw_uid, account.pw_gid)
        self.base.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
                   "-c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w",
                  "-t", str(int(self.timeout)), "start", timeout=self.timeout + 10)
        self.started = True
        return self

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown, bounded) and delete the folder."""
        try:
            if self.started:
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "20", "stop", timeout=30)
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "10", "stop",
                              timeout=20)
                self.started = False
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def main() -> int:
    """Start a cluster with one database ``index``, print its URL, and stop on Ctrl-C."""
    pg = DevPostgres().start()
    try:
        print(f"INDEX_URL={pg.create_database('index')}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
