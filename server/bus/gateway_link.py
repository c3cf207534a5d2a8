"""A stateless gateway's side of the meter bus: the ``Upstream`` of a gateway whose server is
on other processes, maybe other machines.

At login the gateway subscribes to the meter's subject, then asks ``sm.login`` (one of the
cores answers, and from then on publishes the meter's bills and alerts there); what arrives is
passed to the meter through the gateway's own hub, held until its ``welcome`` is sent, as in one
process. A core that stops saying it is alive for ``CORE_QUIET_AFTER`` seconds has its meters'
connections closed (1012, service restart): they log in again, and another core answers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from common import errors
from common.logs import log_event
from common.messages import OptOut, OptOutWithdrawal, TariffInfo, encode
from server.bus.hub import Hub
from server.bus.subjects import LOGIN, RESTARTS, core_alive_subject, core_subject, dump, load, meter_subject
from server.endpoint.upstream import LoginContext
from server.endpoint.validation import Cursor

__all__ = ["BusUpstream", "CORE_QUIET_AFTER"]

log = logging.getLogger("gateway")

#: Seconds a login waits for a core's answer.
LOGIN_TIMEOUT = 15.0
#: Seconds of silence after which a core counts as gone and its meters are sent to log in again.
CORE_QUIET_AFTER = 5.0
#: Close code for a meter whose core went away: "service restart", log in again.
SERVICE_RESTART = 1012


class BusUpstream:
    """The cores, as a gateway on the bus sees them."""

    def __init__(self, nc: Client, hub: Hub) -> None:
        self.nc = nc
        self.hub = hub
        #: Meter -> the core that answered its login, and that login's id (its logout names it).
        self.cores: dict[str, str] = {}
        self.logins: dict[str, str] = {}
        self.name = uuid.uuid4().hex[:12]
        self._login_ids = itertools.count(1)
        self._subs: dict[str, Any] = {}
        self._seen: dict[str, float] = {}
        self._other: list[Any] = []
        self._watch: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        #: Told that a meter's register and sequence restarted on chain (the gateway's cursors).
        self.on_restart: Callable[[str, Cursor], None] | None = None

    async def start(self) -> None:
        """Follow the cores' heartbeats and the meters' restarts."""
        self._other = [await self.nc.subscribe(core_alive_subject(), cb=self._on_alive),
                       await self.nc.subscribe(RESTARTS, cb=self._on_restart)]
        self._watch = asyncio.get_running_loop().create_task(self._watch_cores())

    async def close(self) -> None:
        """Stop following the bus."""
        if self._watch is not None:
            self._watch.cancel()
        for sub in [*self._other, *self._subs.values()]:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass

    # ---------------------------------------------------------------- Upstream

    async def login(self, meter: str, region: str, version: int) -> LoginContext:
        """Subscribe to the meter's subject, then ask a core to take the meter: what it is told after ``welcome``."""
        meter = meter.lower()
        if meter not in self._subs:
            self._subs[meter] = await self.nc.subscribe(meter_subject(meter), cb=self._deliver)
        try:
            login = f"{self.name}:{next(self._login_ids)}"
            reply = await self.nc.request(LOGIN, dump({"meter": meter, "region": region, "version": version,
                                                       "login": login}), timeout=LOGIN_TIMEOUT)
        except (NatsTimeout, asyncio.TimeoutError, NoRespondersError) as err:
            await self._unsubscribe(meter)
            raise errors.GatewayUnavailable("no server core answered this login in time; reconnect in a "
                                            "moment") from err
        answer = load(reply.data)
        if not answer.get("ok"):
            await self._unsubscribe(meter)
            raise errors.error_for_code(str(answer["code"]), str(answer["message"]))
        core = str(answer["core"])
        self.cores[meter] = core
        self.logins[meter] = login
        self._seen.setdefault(core, time.monotonic())
        final_at = answer["final_at"]
        return LoginContext(TariffInfo.model_validate(answer["tariff"]),
                            final_at if final_at == "latest" else int(final_at), list(answer["preface"]))

    def logout(self, meter: str) -> None:
        """The meter's connection went: its subject is left, and its core told."""
        meter = meter.lower()
        core, login = self.cores.pop(meter, None), self.logins.pop(meter, "")
        sub = self._subs.pop(meter, None)  # now: a login of the meter right after subscribes afresh
        if sub is not None:
            self._spawn(_leave(sub))
        if core is not None:
            self._spawn(self.nc.publish(core_subject(core, "logout"), f"{meter} {login}".encode()))

    def settled(self, meter: str, seq: int) -> bool:
        """Nothing is held here (``BusLog.get`` finds nothing to ask about)."""
        return False

    def opt_out(self, msg: OptOut | OptOutWithdrawal, meter: str, region: str) -> str | None:
        """Pass the opt-out to the meter's core, which checks and relays it and answers on the meter's subject."""
        core = self.cores.get(meter.lower())
        if core is None:
            return None
        self._spawn(self.nc.publish(core_subject(core, "opt_out"),
                                    dump({"meter": meter, "region": region, "message": encode(msg)})))
        return None

    def queued(self, count: int) -> None:
        """Nothing to wake: the cores take the log's readings as they come."""

    # ---------------------------------------------------------------- the bus

    async def _unsubscribe(self, meter: str) -> None:
        sub = self._subs.pop(meter, None)
        if sub is not None:
            await _leave(sub)

    def _spawn(self, job: Any) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _deliver(self, msg: Msg) -> None:
        meter = msg.subject.rsplit(".", 1)[-1]
        close = (msg.headers or {}).get("Sm-Close")
        if close is None:
            self.hub.send(meter, msg.data.decode())
            return
        peer = self.hub.peers.get(meter)
        if peer is not None:
            code, _, reason = close.partition(" ")
            self._spawn(peer.outlet.close(int(code), reason))

    async def _on_alive(self, msg: Msg) -> None:
        self._seen[msg.subject.split(".")[2]] = time.monotonic()

    async def _on_restart(self, msg: Msg) -> None:
        try:
            r = load(msg.data)
            meter, cursor = str(r["meter"]), Cursor(int(r["seq"]), int(r["timestamp"]), int(r["energy_wh"]),
                                                    int(r["export_wh"]))
        except (ValueError, KeyError, TypeError):
            return
        if self.on_restart is not None:
            self.on_restart(meter, cursor)

    async def _watch_cores(self) -> None:
        """Send the meters of a core gone quiet to log in again."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            gone = {core for core, seen in self._seen.items() if now - seen > CORE_QUIET_AFTER}
            if not gone:
                continue
            moved = [m for m, core in self.cores.items() if core in gone]
            for core in gone:
                del self._seen[core]
            for meter in moved:
                peer = self.hub.peers.get(meter)
                if peer is not None:
                    self._spawn(peer.outlet.close(SERVICE_RESTART, "server core went away; log in again"))
            log_event(log, "core_gone", logging.WARNING, cores=",".join(sorted(gone)), meters=len(moved),
                      action="their meters log in again and another core answers")


async def _leave(sub: Any) -> None:
    """Unsubscribe (the connection may be gone already)."""
    try:
        await sub.unsubscribe()
    except Exception:  # noqa: BLE001 - see above
        pass
