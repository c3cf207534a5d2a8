"""Settling a demand-response event from the chain's readings, and the recomputation that checks every
credit from the chain alone (and catches one that does not match), against the session's Ganache."""

from __future__ import annotations

import pytest

from common.demand_response import DemandResponse, Participation
from common.eip712 import sign_optout
from common.settings import Settings
from operations.control import Operations
from operations.demand_response import settle, verify
from scripts import demand_response as command
from tests.contracts.test_demand_response import DAY, HOUR, POWER_W, RATE, dr, make_scene  # noqa: F401

BASELINE_WH = POWER_W  # one hour at POWER_W on each of the three baseline days, no in-day change


def test_settlement_credits_the_measured_reduction_and_a_wrong_credit_is_caught(
    dr: DemandResponse, base_settings: Settings, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    scene = make_scene(dr)
    a, b, c = scene.meters
    dr.opt_out(scene.event_id, c.address, 0,
               sign_optout(bytes(c.key), dr.deployment.demand_response_domain, scene.event_id, 0, scene.terms))
    scene.advance_to(scene.terms.end + 2 * HOUR)
    scene.read(scene.terms.start, 6 * HOUR)
    scene.read(scene.terms.end, HOUR, {a.address: 100})  # a shifts its load out of the event's hour
    scene.read(scene.terms.end + HOUR, HOUR)

    done = settle(dr, scene.event_id)
    figures = {r.meter: (r.opted_out, r.measurement and (r.measurement.baseline_wh, r.measurement.actual_wh))
               for r in done.responses}
    assert figures == {a.address: (False, (BASELINE_WH, 100)), b.address: (False, (BASELINE_WH, BASELINE_WH)),
                       c.address: (True, None)}
    assert (done.credited, done.total) == (2, (BASELINE_WH - 100) * RATE)
    assert dr.credit_of(a.address, 1) == (BASELINE_WH - 100) * RATE
    assert dr.credit_of(c.address, 1) == 0
    assert dr.participation(scene.event_id, c.address) == Participation.OPTED_OUT
    assert verify(dr) == ([], 2)

    statement = Operations(base_settings).statement_document(a.address)  # the open period, from the chain
    assert [(c.kind, c.amount) for c in statement.credits][1:] == [("demand_response", (BASELINE_WH - 100) * RATE)]
    assert statement.amount_due == dr.billing.bill(a.address).amount_due - (BASELINE_WH - 100) * RATE

    # A second event whose credit for b was submitted by hand with an inflated baseline.
    monkeypatch.setenv("CHAIN_RPC_URL", base_settings.chain_rpc_url)
    monkeypatch.setenv("CHAIN_WS_URL", base_settings.chain_ws_url)
    monkeypatch.setenv("DEPLOYMENTS_DIR", str(base_settings.deployments_dir))
    assert command.main(["verify"]) == 0
    assert "2 credits checked against the chain: all agree" in capsys.readouterr().out
    assert command.main(["events"]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"event {scene.event_id} "))
    assert "; 1 opted out, 2 credited, " in listed
    assert command.main(["show", str(scene.event_id)]) == 0
    table = capsys.readouterr().out.splitlines()
    row_a = next(line for line in table if line.startswith(a.address))
    assert row_a.split()[1:] == ["no", f"{BASELINE_WH / 1000:.3f}", "0.100", f"{(BASELINE_WH - 100) * RATE / 1e6:.2f}p",
                                 f"{(BASELINE_WH - 100) * RATE / 1e6:.2f}p", "agrees"]
    assert next(line for line in table if line.startswith(c.address)).split()[1:] == [
        "yes", "-", "-", "-", "0.00p", "none", "due"]
    assert table[-1].startswith("3 targeted, 1 opted out, 2 credited, ")
    assert table[-1].endswith("the recomputation from the chain agrees to the micropence for every credit")

    later = dr.create_event("dfs-test", scene.terms.__class__(
        scene.terms.start + 2 * 86_400, HOUR, 0, scene.terms.signal_kind, 2, RATE), meters=[b.address])
    scene.advance_to(scene.terms.start + 2 * 86_400 + 2 * HOUR)
    scene.read(scene.terms.start + 2 * 86_400 + 2 * HOUR, 6 * HOUR)
    dr.credit(later, [(b.address, BASELINE_WH + 250, BASELINE_WH)])
    mismatches, checked = verify(dr)
    assert checked == 3
    assert [(m.event_id, m.meter) for m in mismatches] == [(later, b.address)]
    assert f"credit {250 * RATE} micropence, recomputed" in mismatches[0].reason
    assert command.main(["verify"]) == 1
    assert f"MISMATCH event {later}, meter {b.address}" in capsys.readouterr().out
    assert command.main(["show", str(later)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].endswith("the recomputation from the chain disagrees for 1")


def test_a_baseline_above_what_the_supply_can_deliver_is_settled_at_the_bound_and_verified(
    dr: DemandResponse,  # noqa: F811
) -> None:
    # Meter a drew 20 kW in the event's hour on each baseline day and 23.9 kW in the adjustment hours of the
    # event's day: the in-day adjustment lifts its baseline to 43.8 kWh, more than 24 kW can deliver in an hour.
    scene = make_scene(dr, history=False)
    a, b, _ = scene.meters
    start = scene.terms.start
    bound = dr.max_power_w() * scene.terms.duration // HOUR
    scene.advance_to(scene.terms.end + HOUR)
    for k in (3, 2, 1, 0):
        day = start - k * DAY
        for until, watts in ((day - 4 * HOUR, 100), (day - HOUR, 23_900 if k == 0 else 100), (day, 100),
                             (day + HOUR, 20_000)):
            scene.read(until, HOUR, {a.address: watts})
    scene.read(scene.terms.end + HOUR, HOUR, {a.address: 100})

    done = settle(dr, scene.event_id)
    measured = {r.meter: r.measurement for r in done.responses}
    assert measured[a.address] is not None
    assert (measured[a.address].baseline_wh, measured[a.address].actual_wh) == (bound, 20_000)
    assert dr.credit_of(a.address, 1) == (bound - 20_000) * RATE
    assert verify(dr) == ([], 3)
