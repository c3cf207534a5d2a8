"""A core's side of the meter bus: it answers the gateways' logins, and reaches the meters it
answered for through their subjects.

A login from any gateway goes to one core (the queue group of ``sm.login``), which registers the
meter in its hub with a ``BusOutlet``: its relay's bills and alerts for the meter are published on
``sm.meter.<meter>``, which the gateway holding the connection subscribed to before asking. The
core says it is alive every ``ALIVE_EVERY`` seconds; a gateway closes the connections of meters
whose core went quiet, and they log in again (with another core). Opt-outs and logouts go to the
core the meter logged in with; a meter's register restart goes to every gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from common import errors
from common.logs import log_event
from common.messages import OptOut, OptOutWithdrawal, parse_message
from server.bus.hub import Hub
from server.bus.subjects import LOGIN, RESTARTS, core_alive_subject, core_subject, dump, load, meter_subject
from server.endpoint.upstream import InProcess
from server.endpoint.validation import Cursor

__all__ = ["BusCore", "BusOutlet", "ALIVE_EVERY", "core_id"]

log = logging.getLogger("bus")

#: Seconds between a core's "alive" messages.
ALIVE_EVERY = 1.0


def core_id() -> str:
    """A name for this core process, unique on the bus (host and process id)."""
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}".replace(".", "-").replace("*", "-")


@dataclass(eq=False)
class BusOutlet:
    """A meter's connection held by a gateway somewhere, as this core's hub sees it."""

    nc: Client
    meter: str

    async def send(self, message: str) -> None:
        """Publish a message for the meter (the gateway holding it passes it on)."""
        await self.nc.publish(meter_subject(self.meter), message.encode())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Ask the gateway to close the meter's connection."""
        await self.nc.publish(meter_subject(self.meter), b"", headers={"Sm-Close": f"{code} {reason}"})


class BusCore:
    """Serves the gateways' logins, logouts and opt-outs for this core, and says it is alive."""

    def __init__(self, nc: Client, hub: Hub, upstream: InProcess, name: str | None = None) -> None:
        self.nc = nc
        self.hub = hub
        self.upstream = upstream
        self.name = name or core_id()
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []
        #: Meter -> the login (a gateway's id for that connection) this core answered last: a logout counts only
        #: for it.
        self._logins: dict[str, str] = {}

    async def start(self) -> None:
        """Subscribe and start saying this core is alive."""
        self._subs = [await self.nc.subscribe(LOGIN, queue="cores", cb=self._on_login),
                      await self.nc.subscribe(core_subject(self.name, "logout"), cb=self._on_logout),
                      await self.nc.subscribe(core_subject(self.name, "opt_out"), cb=self._on_opt_out)]
        self._tasks.append(asyncio.get_running_loop().create_task(self._alive()))
        log_event(log, "core_on_bus", core=self.name)

    async def close(self) -> None:
        """Stop answering (the gateways see this core go quiet and move its meters)."""
        for task in self._tasks:
            task.cancel()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass

    async def _alive(self) -> None:
        subject = core_alive_subject(self.name)
        while True:
            try:
                await self.nc.publish(subject, b"")
            except Exception as err:  # noqa: BLE001 - said, and tried again next time
                log_event(log, "core_alive_failed", logging.WARNING, error=str(err)[:200])
            await asyncio.sleep(ALIVE_EVERY)

    async def _on_login(self, msg: Msg) -> None:
        try:
            ask = load(msg.data)
            meter, region, version = str(ask["meter"]).lower(), str(ask["region"]), int(ask["version"])
            login = str(ask.get("login", ""))
        except (ValueError, KeyError, TypeError):
            log_event(log, "bus_message_refused", logging.WARNING, subject=msg.subject, reason="not a login")
            return
        outlet = BusOutlet(self.nc, meter)
        replaced = self.hub.add(meter, region, outlet, version)
        if replaced is not None and replaced.writer is not None:
            replaced.writer.cancel()  # the meter's older login, on this or another gateway: its messages go no more
        self._logins[meter] = login
        try:
            context = await self.upstream.login(meter, region, version)
        except errors.SmartMeterError as err:
            self.hub.remove(meter, outlet)
            await msg.respond(dump({"ok": False, "code": err.code, "message": err.message}))
            return
        # Answered, then released: the messages held for the meter follow the answer on this connection.
        await msg.respond(dump({"ok": True, "core": self.name, "tariff": context.tariff.model_dump(),
                                "final_at": context.final_at, "preface": context.preface}))
        self.hub.release(meter)

    async def _on_logout(self, msg: Msg) -> None:
        meter, _, login = msg.data.decode(errors="replace").lower().partition(" ")
        if self._logins.get(meter) != login:
            return  # the logout of an older connection, come after the meter's newer login
        del self._logins[meter]
        peer = self.hub.peers.get(meter)
        if peer is not None and isinstance(peer.outlet, BusOutlet):
            self.hub.remove(meter, peer.outlet)

    async def _on_opt_out(self, msg: Msg) -> None:
        try:
            ask = load(msg.data)
            meter, region, opt_out = str(ask["meter"]), str(ask["region"]), parse_message(str(ask["message"]))
        except (ValueError, KeyError, TypeError, errors.SmartMeterError):
            log_event(log, "bus_message_refused", logging.WARNING, subject=msg.subject, reason="not an opt-out")
            return
        if isinstance(opt_out, (OptOut, OptOutWithdrawal)):
            refusal = self.upstream.opt_out(opt_out, meter, region)
            if refusal is not None:
                self.hub.send(meter, refusal)

    def restarted(self, meter: str, cursor: Cursor) -> None:
        """A relay listener: a meter's register and sequence restarted on chain; every gateway is told."""
        payload = dump({"meter": meter.lower(), "seq": cursor.seq, "timestamp": cursor.timestamp,
                        "energy_wh": cursor.energy_wh, "export_wh": cursor.export_wh})
        task = asyncio.get_running_loop().create_task(self.nc.publish(RESTARTS, payload))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
