"""A meter in demand response: it hears the events that target it over its connection, opts out of the ones
its household does not take part in (signed for the event's current terms, through the gateway, recorded on
chain), opts out again of a changed event, may withdraw an opt-out, shows each event's status and its own part
on its panel, and cuts its load while an event it takes part in is active."""

from __future__ import annotations

import asyncio
import time

import pytest
from rich.console import Console

from common.chain import ChainClient
from common.demand_response import DemandResponse, Participation
from common.deployment import load_deployment
from common.dr_terms import Signal, Terms
from common.messages import DemandResponseMessage
from common.tariff import PERIOD_SECONDS
from meters.display import render_meter
from meters.response import LEVEL_FACTORS, REBOUND_SHARE, demand_factor, event_factor, wants_opt_out
from operations.provisioning import provision
from server.app import ServerApp
from tests.meters.test_client import make_client, wait_for

HOUR = 3_600


async def test_a_household_opts_out_over_its_connection_and_the_other_takes_part(meter_settings, deployment):
    provision(meter_settings, count=2, history_days=0)
    deployment = load_deployment(meter_settings)
    quitter, member = make_client(meter_settings, "meter-01")[0], make_client(meter_settings, "meter-02")[0]
    for client, rate in ((quitter, 1.0), (member, 0.0)):
        client.dr_domain, client.opt_out_rate = deployment.demand_response_domain, rate
    app = await ServerApp.start(meter_settings, deployment)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in (quitter, member)]
    dr = DemandResponse(ChainClient(meter_settings), deployment)
    try:
        await wait_for(lambda: all(c.status.state.value == "connected" for c in (quitter, member)), 30,
                       "both meters to log in")
        start = -(-(int(time.time()) + 2 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
        event_id = await asyncio.to_thread(dr.create_event, "flex", Terms(start, HOUR, HOUR, Signal.LEVEL, 2, 100_000),
                                           (), [quitter.status.meter, member.status.meter])
        await wait_for(lambda: event_id in member.events and quitter.events.get(event_id) is not None
                       and quitter.events[event_id].opted_out, 30, "the event and the opt-out to come back")
        assert dr.participation(event_id, quitter.status.meter) == Participation.OPTED_OUT
        assert dr.participation(event_id, member.status.meter) == Participation.NONE
        assert not member.events[event_id].opted_out and member.opting_out == set()

        # A changed event reaches the meters with its new modification number; it lapsed the opt-out, which
        # the household signs again for the new terms.
        await asyncio.to_thread(dr.modify_event, event_id, Terms(start + PERIOD_SECONDS, HOUR, HOUR, Signal.LEVEL,
                                                                 3, 100_000))
        await wait_for(lambda: member.events[event_id].modification == 1
                       and quitter.events[event_id].modification == 1 and quitter.events[event_id].opted_out, 30,
                       "the change to reach both meters and the opt-out of the new terms to come back")
        assert member.events[event_id].signal_value == 3 and (event_id, 1) in quitter.opting_out
        assert dr.participation(event_id, quitter.status.meter) == Participation.OPTED_OUT
        assert dr.contract.functions.eventOf(event_id).call()[2] == 1

        screens = {}
        for client in (quitter, member):
            console = Console(record=True, width=160)
            console.print(render_meter(client.status))
            screens[client.status.name] = console.export_text()
        assert f"event {event_id} (revision 1) (flex)" in screens["meter-01"]
        assert "level 3 · far · opted out" in screens["meter-01"]
        assert "level 3 · far · taking part" in screens["meter-02"]

        # The household changes its mind: it withdraws its opt-out (signed), and takes part again.
        assert quitter.withdraw_opt_out() == event_id
        await wait_for(lambda: not quitter.events[event_id].opted_out, 30, "the withdrawal to come back")
        assert dr.participation(event_id, quitter.status.meter) == Participation.WITHDRAWN
        assert quitter.opt_out() is None and quitter.withdraw_opt_out() is None  # nothing left to ask
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await app.stop()


def _event(start: int, level: int = 2, opted_out: bool = False, status: str = "far") -> DemandResponseMessage:
    return DemandResponseMessage(id=4, modification=0, programme="flex", notice_at=start - HOUR, start=start,
                                 duration=HOUR, ramp_up=HOUR, signal_kind="level", signal_value=level,
                                 credit_rate=100_000, status=status, opted_out=opted_out)  # type: ignore[arg-type]


def test_the_load_is_cut_while_an_event_it_takes_part_in_is_active_and_comes_back_after(meter_settings, deployment):
    provision(meter_settings, count=1, history_days=0)
    client, _ = make_client(meter_settings, "meter-01")
    model = client.source.model
    now = int(time.time())
    client._on_message(_event(now + HOUR))
    assert model.demand_factor == 1.0, "not yet active"
    client._on_message(_event(now - 60, level=2).model_copy(update={"id": 5}))
    assert model.demand_factor == LEVEL_FACTORS[2] == client.status.demand_factor
    client.events.clear()
    client._on_message(_event(now - HOUR - 60, level=3))  # ended a minute ago: the deferred load comes back
    assert model.demand_factor == pytest.approx(1 + REBOUND_SHARE * (1 - LEVEL_FACTORS[3]))
    client.events.clear()
    client._on_message(_event(now - 60, opted_out=True))
    assert model.demand_factor == 1.0, "a household that opted out carries on as usual"


def test_the_response_follows_the_signal() -> None:
    def terms(kind: Signal, value: int, start: int = 0) -> Terms:
        return Terms(start, HOUR, 0, kind, value, 1)

    assert [event_factor(terms(Signal.LEVEL, level)) for level in range(4)] == [1.0, 0.85, 0.70, 0.55]
    assert event_factor(terms(Signal.PRICE, 100_000)) > event_factor(terms(Signal.PRICE, 300_000)) == pytest.approx(
        0.73)
    assert event_factor(terms(Signal.PRICE, 5_000_000)) == pytest.approx(0.55)
    both = [(terms(Signal.LEVEL, 1), False), (terms(Signal.LEVEL, 3), False)]
    assert demand_factor(both, 60) == 0.55, "the deepest cut of the events active"
    assert demand_factor(both, HOUR + 60) == pytest.approx(1 + REBOUND_SHARE * 0.45)
    assert demand_factor(both, 2 * HOUR + 60) == 1.0
    assert demand_factor([(terms(Signal.LEVEL, 3), True)], 60) == 1.0, "a cancelled event asks nothing"
    drawn = [wants_opt_out("0x" + f"{i:040x}", 7, 0.3) for i in range(2_000)]
    assert 0.25 < sum(drawn) / len(drawn) < 0.35
    assert drawn == [wants_opt_out("0x" + f"{i:040x}", 7, 0.3) for i in range(2_000)], "the same each time"
    assert not any(wants_opt_out("0x" + f"{i:040x}", 7, 0.0) for i in range(100))


class _Wire:
    """A stand-in for the meter's link that keeps what the meter sends."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send(self, message: object) -> None:
        self.sent.append(message)


async def test_an_opt_out_the_server_failed_to_relay_is_asked_again_and_a_refused_one_is_not(
    meter_settings, deployment,
) -> None:
    from common.eip712 import recover_optout_signer
    from common.messages import ErrorMessage, OptOut

    provision(meter_settings, count=1, history_days=0)
    client, _ = make_client(meter_settings, "meter-01")
    client.dr_domain, client.opt_out_rate = deployment.demand_response_domain, 1.0
    wire = _Wire()
    client.link = wire  # type: ignore[assignment]
    event = _event(int(time.time()) + 2 * HOUR)
    client._on_message(event)
    await asyncio.sleep(0)
    assert [type(m) for m in wire.sent] == [OptOut] and client.opting_out == {(event.id, 0)}
    sent = wire.sent[0]
    assert sent.modification == 0  # type: ignore[attr-defined]
    assert recover_optout_signer(deployment.demand_response_domain, client.status.meter, event.id, 0, event.terms,
                                 sent.signature).lower() == client.status.meter.lower()  # type: ignore[attr-defined]
    client._on_message(ErrorMessage(code="chain_unavailable", message="the chain did not answer", event_id=event.id))
    assert client.opting_out == set() and "was refused" in client.status.last_error
    client._on_message(event)  # sent again (after a login, or a change)
    await asyncio.sleep(0)
    assert len(wire.sent) == 2
    client._on_message(ErrorMessage(code="opt_out_refused", message="event 4 is active", event_id=event.id))
    client._on_message(event)
    await asyncio.sleep(0)
    assert len(wire.sent) == 2 and client.opting_out == {(event.id, 0)}, "refused for good: not asked again"


async def test_a_changed_event_is_opted_out_of_again_for_its_new_terms_and_a_withdrawal_is_signed_and_kept(
    meter_settings, deployment,
) -> None:
    from common.eip712 import recover_optout_signer
    from common.messages import OptOut, OptOutWithdrawal

    provision(meter_settings, count=1, history_days=0)
    client, _ = make_client(meter_settings, "meter-01")
    client.dr_domain, client.opt_out_rate = deployment.demand_response_domain, 1.0
    domain, meter = deployment.demand_response_domain, client.status.meter
    wire = _Wire()
    client.link = wire  # type: ignore[assignment]
    event = _event(int(time.time()) + 2 * HOUR)
    client._on_message(event.model_copy(update={"opted_out": True}))  # opted out of modification 0 already
    changed = event.model_copy(update={"modification": 1, "signal_value": 3})
    client._on_message(changed)  # the change lapsed it: this meter is not opted out of the new terms
    await asyncio.sleep(0)
    assert not client.events[event.id].opted_out
    assert [(type(m), m.modification) for m in wire.sent] == [(OptOut, 1)]  # type: ignore[attr-defined]
    assert recover_optout_signer(domain, meter, event.id, 1, changed.terms,
                                 wire.sent[0].signature) == meter  # type: ignore[attr-defined]

    client._on_message(changed.model_copy(update={"opted_out": True}))
    assert client.withdraw_opt_out(event.id) == event.id
    await asyncio.sleep(0)
    withdrawal = wire.sent[-1]
    assert isinstance(withdrawal, OptOutWithdrawal) and withdrawal.modification == 1
    assert recover_optout_signer(domain, meter, event.id, 1, changed.terms, withdrawal.signature,
                                 withdrawal=True) == meter
    client._on_message(changed)  # the server tells it back: taking part, and not opted out of again
    await asyncio.sleep(0)
    assert not client.events[event.id].opted_out and len(wire.sent) == 2
