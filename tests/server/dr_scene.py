"""A demand-response scene on a running server, shared by the API and dashboard tests: one event credited,
one completed and not settled, one to come (built on the contract tests' ``Scene``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from common.demand_response import DemandResponse
from common.eip712 import sign_optout
from operations.demand_response import settle
from server.app import ServerApp
from tests.contracts.test_demand_response import DAY, HOUR, Scene, make_scene


@dataclass
class Settled:
    """The contract tests' scene on a running server: event 1 credited (meter a cut its load to 100 W, b did
    not, c opted out), event 2 for b a day later completed but not settled (b ran at 200 W), event 3 for a to come."""

    scene: Scene
    later: int
    future: int


async def settled_scene(server: ServerApp, dr: DemandResponse) -> Settled:
    """Build ``Settled`` on the session's Ganache (the ``snapshot`` fixture puts the chain back) and wait for the
    server's index to hold every reading."""
    settled = await asyncio.to_thread(_build, dr)
    deadline = time.monotonic() + 30
    while any(_seq(server, m.address) < settled.scene.seqs[m.address] for m in settled.scene.meters):
        assert time.monotonic() < deadline, "the index did not read the scene's readings"
        await asyncio.sleep(0.05)
    return settled


def _seq(server: ServerApp, meter: str) -> int:
    """The newest reading's number the server's index holds for a meter (0: none, or not registered yet)."""
    record = server.index.meter(meter)
    return record.last_seq if record is not None else 0


def _build(dr: DemandResponse) -> Settled:
    """The scene's transactions (blocking: run in a thread beside the server's event loop)."""
    scene = make_scene(dr, history=False)
    a, b, c = scene.meters
    start = scene.terms.start
    later = dr.create_event("dfs-later", replace(scene.terms, start=start + DAY, ramp_up=0), meters=[b.address])
    future = dr.create_event("dfs-future", replace(scene.terms, start=start + 3 * DAY), meters=[a.address])
    dr.opt_out(scene.event_id, c.address, 0, sign_optout(bytes(c.key), dr.deployment.demand_response_domain,
                                                         scene.event_id, 0, scene.terms))
    scene.advance_to(start + DAY + 3 * HOUR)
    scene.read(start, 6 * HOUR)
    scene.read(scene.terms.end, HOUR, {a.address: 100})
    scene.read(start + DAY, HOUR)
    scene.read(start + DAY + HOUR, HOUR, {b.address: 200})
    scene.read(start + DAY + 3 * HOUR, HOUR)
    settle(dr, scene.event_id)
    return Settled(scene, later, future)

