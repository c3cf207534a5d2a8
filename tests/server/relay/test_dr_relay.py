"""Demand response over the meters' wire (protocol 4 and 5) against the session's Ganache: an event reaches the
meters it targets, a change reaches them with its new modification number (and lapses their opt-outs), a
meter's opt-out signed for the event's current terms goes through the gateway to the chain and can be
withdrawn, bad, stale or repeated opt-outs are refused with their event's id, a version 4 meter's unbound
opt-out is refused, and a meter that logs in later is told the event as it stands; the same with the gateway
in two gateway processes on the bus (``GATEWAY_WORKERS``), where opt-outs and events cross NATS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from eth_account import Account
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from common.demand_response import DemandResponse, Participation
from common.dr_terms import Signal, Terms
from common.eip712 import sign_login, sign_optout
from common.events import ChainEvent
from common.messages import (
    Auth,
    DemandResponseMessage,
    ErrorMessage,
    OptOut,
    OptOutWithdrawal,
    Welcome,
    encode,
    parse_message,
)
from common.tariff import PERIOD_SECONDS
from common.tls import client_context
from server.app import ServerApp
from server.bus.hub import Hub
from server.relay.dr_relay import DemandResponseRelay
from tests.server.endpoint.test_gateway import next_of

HOUR = 3_600
RATE = 100_000


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
async def server(request, server_settings, deployment) -> AsyncIterator[ServerApp]:
    """The server, with the meters' endpoint in its own process or in two workers."""
    app = await ServerApp.start(server_settings.replace(gateway_workers=request.param), deployment)
    await app.relay.caught_up.wait()
    yield app
    await app.stop()


async def _event_at(link: Any, modification: int) -> DemandResponseMessage:
    """The next event message of this modification (the meter may be told the one before again meanwhile, as
    its opt-out's log becomes final)."""
    while (told := await next_of(link, DemandResponseMessage)).modification != modification:
        pass
    return told


def _terms(start: int, level: int = 2) -> Terms:
    return Terms(start, HOUR, HOUR, Signal.LEVEL, level, RATE)


async def test_events_reach_their_meters_changed_ones_with_the_new_modification_and_opt_outs_go_through_the_gateway(
    snapshot, server, new_meter, link_for, chain, deployment, server_settings,
) -> None:
    dr = DemandResponse(chain, deployment)
    north_a, north_b, south = new_meter(region="dr-north"), new_meter(region="dr-north"), new_meter(region="dr-south")
    links = {m.address: link_for(m) for m in (north_a, north_b, south)}
    for link in links.values():
        await link.connect()
        assert link.version == 5
    start = -(-(int(time.time()) + 3 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
    event_id = dr.create_event("flex", _terms(start), regions=["dr-north"])

    for meter in (north_a, north_b):
        told = await next_of(links[meter.address], DemandResponseMessage)
        assert (told.id, told.modification, told.programme, told.start, told.duration) == (event_id, 0, "flex",
                                                                                             start, HOUR)
        assert (told.signal_kind, told.signal_value, told.credit_rate, told.status) == ("level", 2, RATE, "far")
        assert not told.opted_out and told.credit is None

    later = _terms(start + PERIOD_SECONDS, level=3)
    dr.modify_event(event_id, later)
    changed = await next_of(links[north_b.address], DemandResponseMessage)
    assert (changed.id, changed.modification, changed.start, changed.signal_value) == (
        event_id, 1, start + PERIOD_SECONDS, 3)

    # North A opts out over its connection: one signed for the old terms is refused before any gas is spent,
    # one of the current terms is relayed to the chain and told back to the meter.
    domain = deployment.demand_response_domain
    a_link = links[north_a.address]
    assert (await next_of(a_link, DemandResponseMessage)).modification == 1
    stale = sign_optout(north_a.key, domain, event_id, 0, _terms(start))
    await a_link.send(OptOut(meter=north_a.address, event_id=event_id, modification=0, signature=stale))
    refused = await next_of(a_link, ErrorMessage)
    assert (refused.code, refused.event_id) == ("opt_out_refused", event_id)
    assert "modification 0" in refused.message and "at modification 1 now" in refused.message
    signature = sign_optout(north_a.key, domain, event_id, 1, later)
    await a_link.send(OptOut(meter=north_a.address, event_id=event_id, modification=1, signature=signature))
    told = await next_of(a_link, DemandResponseMessage)
    assert (told.id, told.opted_out) == (event_id, True)
    assert dr.participation(event_id, north_a.address) == Participation.OPTED_OUT
    assert dr.participation(event_id, north_b.address) == Participation.NONE

    # Again: refused before any gas is spent, with the event's id.
    await a_link.send(OptOut(meter=north_a.address, event_id=event_id, modification=1, signature=signature))
    refused = await next_of(a_link, ErrorMessage)
    assert (refused.code, refused.event_id) == ("opt_out_refused", event_id)
    # Signed with another key, and for a meter the event does not target.
    b_link = links[north_b.address]
    await b_link.send(OptOut(meter=north_b.address, event_id=event_id, modification=1,
                             signature=sign_optout(Account.create().key, domain, event_id, 1, later)))
    assert ((await next_of(b_link, ErrorMessage)).code, dr.participation(event_id, north_b.address)) == (
        "bad_signature", Participation.NONE)
    s_link = links[south.address]
    await s_link.send(OptOut(meter=south.address, event_id=event_id, modification=1,
                             signature=sign_optout(south.key, domain, event_id, 1, later)))
    refused = await next_of(s_link, ErrorMessage)
    assert (refused.code, refused.event_id) == ("opt_out_refused", event_id)
    assert "does not target this meter" in refused.message

    # North B opts out, then the event changes: its opt-out lapses, and it is told so with the change.
    await b_link.send(OptOut(meter=north_b.address, event_id=event_id, modification=1,
                             signature=sign_optout(north_b.key, domain, event_id, 1, later)))
    assert (await next_of(b_link, DemandResponseMessage)).opted_out
    latest = _terms(start + PERIOD_SECONDS, level=1)
    dr.modify_event(event_id, latest)
    changed = await _event_at(b_link, 2)
    assert (changed.modification, changed.signal_value, changed.opted_out) == (2, 1, False)
    assert dr.participation(event_id, north_b.address) == Participation.NONE
    await _event_at(a_link, 2)
    signature = sign_optout(north_a.key, domain, event_id, 2, latest)
    await a_link.send(OptOut(meter=north_a.address, event_id=event_id, modification=2, signature=signature))
    assert (await next_of(a_link, DemandResponseMessage)).opted_out

    # North A withdraws its opt-out (signed): told back, and it cannot opt out of these terms again.
    withdrawal = sign_optout(north_a.key, domain, event_id, 2, latest, withdrawal=True)
    await a_link.send(OptOutWithdrawal(meter=north_a.address, event_id=event_id, modification=2,
                                       signature=withdrawal))
    while (told := await _event_at(a_link, 2)).opted_out:
        pass  # the opt-out's own log, final after the withdrawal was sent
    assert (told.id, told.modification, told.opted_out) == (event_id, 2, False)
    assert dr.participation(event_id, north_a.address) == Participation.WITHDRAWN
    await a_link.send(OptOut(meter=north_a.address, event_id=event_id, modification=2, signature=signature))
    refused = await next_of(a_link, ErrorMessage)
    assert (refused.code, refused.event_id) == ("opt_out_refused", event_id) and "withdrew" in refused.message
    await b_link.send(OptOutWithdrawal(meter=north_b.address, event_id=event_id, modification=2,
                                       signature=sign_optout(north_b.key, domain, event_id, 2, latest,
                                                             withdrawal=True)))
    refused = await next_of(b_link, ErrorMessage)
    assert (refused.code, refused.event_id) == ("opt_out_refused", event_id) and "not opted out" in refused.message
    # Opt out again, for the login below.
    await asyncio.to_thread(dr.modify_event, event_id, later)
    await _event_at(a_link, 3)
    await a_link.send(OptOut(meter=north_a.address, event_id=event_id, modification=3,
                             signature=sign_optout(north_a.key, domain, event_id, 3, later)))
    assert (await next_of(a_link, DemandResponseMessage)).opted_out

    # A meter logging in later is told the event as it stands, its opt-out included.
    await a_link.close()
    relink = link_for(north_a)
    await relink.connect()
    again = await next_of(relink, DemandResponseMessage)
    assert (again.id, again.modification, again.opted_out) == (event_id, 3, True)
    for link in (relink, b_link, s_link):
        await link.close()


async def test_a_meter_of_an_older_protocol_version_is_not_sent_events(
    snapshot, server, new_meter, chain, deployment, server_settings,
) -> None:
    meter = new_meter(region="dr-old")
    async with connect(server_settings.server_url, ssl=client_context(server_settings.ca_cert_path),
                       subprotocols=[Subprotocol("smartmeter.v3")]) as ws:
        await _log_in(ws, meter, deployment)
        start = -(-(int(time.time()) + 3 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
        DemandResponse(chain, deployment).create_event("flex", _terms(start), meters=[meter.address])
        deadline = time.monotonic() + 6  # three of the relay's looks at the chain
        while time.monotonic() < deadline:
            try:
                raw = await _recv(ws, deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            assert not isinstance(parse_message(raw), DemandResponseMessage)
        # Nor may it opt out over the wire (it does not speak version 4).
        await ws.send(encode(OptOut(meter=meter.address, event_id=1, signature="0x" + "1" * 130)))
        assert parse_message(await _recv(ws, 10)).code == "unexpected_message"


async def test_a_version_4_meter_is_told_events_but_its_opt_out_signed_without_the_terms_is_refused(
    snapshot, server, new_meter, chain, deployment, server_settings,
) -> None:
    meter = new_meter(region="dr-v4")
    async with connect(server_settings.server_url, ssl=client_context(server_settings.ca_cert_path),
                       subprotocols=[Subprotocol("smartmeter.v4")]) as ws:
        await _log_in(ws, meter, deployment)
        start = -(-(int(time.time()) + 3 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
        event_id = DemandResponse(chain, deployment).create_event("flex", _terms(start), meters=[meter.address])
        while not isinstance(told := parse_message(await _recv(ws, 30)), DemandResponseMessage):
            pass
        assert (told.id, told.modification) == (event_id, 0)
        # The opt-out a version 4 meter sends (no modification): refused with a reason, no gas spent.
        await ws.send(f'{{"type":"opt_out","meter":"{meter.address}","eventId":{event_id},'
                      f'"signature":"0x{"1" * 130}"}}')
        refused = parse_message(await _recv(ws, 10))
        assert (refused.code, refused.event_id) == ("opt_out_refused", event_id)
        assert "protocol version 4" in refused.message
        # A withdrawal is a message of version 5.
        await ws.send(encode(OptOutWithdrawal(meter=meter.address, event_id=event_id, modification=0,
                                              signature="0x" + "1" * 130)))
        assert parse_message(await _recv(ws, 10)).code == "unexpected_message"


async def _log_in(ws: Any, meter: Any, deployment: Any) -> None:
    """Answer the gateway's challenge on a raw socket with the meter's signed login, and see the welcome."""
    challenge = parse_message(await ws.recv())
    nonce = bytes.fromhex(challenge.nonce[2:])
    await ws.send(encode(Auth(meter=meter.address, nonce=challenge.nonce,
                              signature=sign_login(meter.key, deployment.domain, nonce))))
    assert isinstance(parse_message(await ws.recv()), Welcome)


async def _recv(ws: Any, timeout: float) -> Any:
    return await asyncio.wait_for(ws.recv(), max(0.1, timeout))


class _Peers(Hub):
    """A hub whose meters are fake connections that keep what they are sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, DemandResponseMessage]] = []

    def send(self, meter: str, message: str) -> bool:
        self.sent.append((meter, parse_message(message)))
        return True


def _event(name: str, block: int, **args: Any) -> ChainEvent:
    return ChainEvent(name, args, block, 0, "0x" + "00" * 32)


def test_opt_outs_and_credits_go_to_their_meter_only_and_a_cancellation_to_every_targeted_meter(
    deployment,
) -> None:
    from common.billing import text32
    from server.bus.hub import Peer

    hub = _Peers()
    meters = ["0x" + f"{i:040x}" for i in (1, 2, 3)]
    for meter, region, version in zip(meters, ("north", "north", "north"), (4, 4, 3), strict=True):
        hub.peers[meter] = Peer(meter, region, outlet=None, version=version)  # type: ignore[arg-type]
    relay = DemandResponseRelay(deployment, chain=None, hub=hub, final=lambda: None)  # type: ignore[arg-type]
    start = int(time.time()) + 2 * HOUR
    relay._apply(_event("DemandResponseEvent", 5, id=7, modification=0, programme=text32("flex"),
                        noticeAt=int(time.time()), terms=list(_terms(start).as_struct()),
                        regions=[text32("north")], meters=[]))
    assert [(m, e.id) for m, e in hub.sent] == [(meters[0], 7), (meters[1], 7)]  # not the version 3 meter
    hub.sent.clear()
    relay._apply(_event("OptedOut", 6, meter=meters[0], eventId=7, modification=0))
    relay._apply(_event("CreditApplied", 9, meter=meters[1], eventId=7, periodId=1, baselineWh=900,
                        actualWh=400, amount=500 * RATE))
    assert [(m, e.opted_out, e.credit, e.baseline_wh, e.actual_wh) for m, e in hub.sent] == [
        (meters[0], True, None, None, None), (meters[1], False, 500 * RATE, 900, 400)]
    hub.sent.clear()
    relay._apply(_event("DemandResponseCancelled", 10, id=7, modification=1))
    assert [(m, e.status, e.modification, e.opted_out) for m, e in hub.sent] == [
        (meters[0], "cancelled", 1, True), (meters[1], "cancelled", 1, False)]
    assert [e.id for e in relay.messages_for(meters[1], "north", time.time())] == [7]
    assert relay.messages_for(meters[1], "south", time.time()) == []
    # Long over: not told after a login any more.
    assert relay.messages_for(meters[1], "north", start + 2 * 86_400) == []


def test_the_wire_forms_of_demand_response_round_trip() -> None:
    message = DemandResponseMessage(id=3, modification=2, programme="flex", notice_at=1, start=1_800, duration=1_800,
                                    ramp_up=600, signal_kind="price", signal_value=35_000, credit_rate=RATE,
                                    status="near", opted_out=True)
    assert parse_message(encode(message)) == message
    assert '"signalKind":"price"' in encode(message) and '"rampUp":600' in encode(message)
    assert message.status_now(1_800).name == "ACTIVE" and message.status_now(3_600).name == "COMPLETED"
