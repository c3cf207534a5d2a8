"""``GET /api/v1/demand-response/events`` against a running server on the session's Ganache: an event
changed after notice shows its new modification number, each meter's opt state, and a customer sees
only their own meter; ``GET /api/v1/meters/{address}/demand-response`` gives a meter's baseline against
its actual (credited or provisional), and its bills carry the credit and the amount payable."""

from __future__ import annotations

from dataclasses import replace

from common.chain import ChainClient
from common.demand_response import DemandResponse, Signal, Terms, measure_event
from common.eip712 import sign_optout
from common.tariff import PERIOD_SECONDS, format_pounds
from server.api.schemas import iso
from tests.contracts.test_demand_response import POWER_W, RATE
from tests.server.api.test_api import API, add_customer, api, op  # noqa: F401
from tests.server.dr_scene import settled_scene

HOUR = 3_600


async def test_events_show_their_modification_number_and_each_meters_participation(
    api, op, server, new_meter, chain: ChainClient,  # noqa: F811
) -> None:
    first, second = new_meter(region="north"), new_meter(region="north")
    dr = DemandResponse(chain, server.deployment)
    start = -(-(dr.billing.now() + 3 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
    terms = Terms(start, HOUR, HOUR, Signal.LEVEL, 2, 100_000)
    event_id = dr.create_event("dfs-api", terms, meters=[first.address, second.address])
    terms = replace(terms, signal_value=3)
    dr.modify_event(event_id, terms)
    dr.opt_out(event_id, second.address, 1,
               sign_optout(bytes(second.key), server.deployment.demand_response_domain, event_id, 1, terms))

    reply = await api.get(f"{API}/demand-response/events", headers=op)
    assert reply.status_code == 200
    event = next(e for e in reply.json() if e["id"] == event_id)
    assert (event["modification"], event["status"], event["signal_kind"], event["signal_value"]) == (
        1, "far", "level", 3)
    assert {m["meter"]: m["state"] for m in event["meters"]} == {first.address: "participating",
                                                                  second.address: "opted_out"}

    customer = {"X-API-Key": add_customer(server, first, "meter-a")}
    mine = (await api.get(f"{API}/demand-response/events", headers=customer)).json()
    assert [e["id"] for e in mine if e["id"] == event_id] == [event_id]
    assert {m["meter"] for e in mine for m in e["meters"]} == {first.address}

    # The customer opts out through the API with the meter's signature; the relayer pays.
    url = f"{API}/demand-response/events/{event_id}/opt-out"
    domain = server.deployment.demand_response_domain
    forged = sign_optout(bytes(second.key), domain, event_id, 1, terms)
    reply = await api.post(url, headers=customer, json={"meter": first.address, "modification": 1,
                                                        "signature": forged})
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "invalid_request")
    reply = await api.post(url, headers=customer, json={"meter": second.address, "modification": 1,
                                                        "signature": forged})
    assert (reply.status_code, reply.json()["error"]["code"]) == (403, "forbidden")
    stale = sign_optout(bytes(first.key), domain, event_id, 0, replace(terms, signal_value=2))
    reply = await api.post(url, headers=customer, json={"meter": first.address, "modification": 0,
                                                        "signature": stale})
    assert (reply.status_code, reply.json()["error"]["code"]) == (409, "opt_out_refused")
    assert "modification 0" in reply.json()["error"]["message"]
    signature = sign_optout(bytes(first.key), domain, event_id, 1, terms)
    reply = await api.post(url, headers=customer, json={"meter": first.address, "modification": 1,
                                                        "signature": signature})
    assert reply.status_code == 200 and reply.json()["meter"] == first.address
    assert reply.json()["modification"] == 1
    assert dr.opted_out(event_id) == {first.address, second.address}
    reply = await api.post(url, headers=customer, json={"meter": first.address, "modification": 1,
                                                        "signature": signature})
    assert (reply.status_code, reply.json()["error"]["code"]) == (409, "opt_out_refused")
    assert reply.json()["error"]["message"].startswith(f"AlreadyOptedOut({event_id}, ")

    # ... and withdraws it before the start, signed too: the meter takes part again.
    withdrawal = sign_optout(bytes(first.key), domain, event_id, 1, terms, withdrawal=True)
    reply = await api.post(f"{url}/withdrawal", headers=customer,
                           json={"meter": first.address, "modification": 1, "signature": signature})
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "invalid_request")  # an opt-out's signature
    reply = await api.post(f"{url}/withdrawal", headers=customer,
                           json={"meter": first.address, "modification": 1, "signature": withdrawal})
    assert reply.status_code == 200, reply.text
    assert dr.opted_out(event_id) == {second.address}
    reply = await api.get(f"{API}/demand-response/events", headers=op)
    event = next(e for e in reply.json() if e["id"] == event_id)
    assert {m["meter"]: m["state"] for m in event["meters"]} == {first.address: "participating",
                                                                  second.address: "opted_out"}
    chain.decoder = None


async def test_a_meters_events_show_the_credited_or_provisional_baseline_against_its_actual_and_bills_the_credit(
    snapshot, api, op, server, chain: ChainClient,  # noqa: F811
) -> None:
    dr = DemandResponse(chain, server.deployment)
    settled = await settled_scene(server, dr)
    scene, (a, b, c) = settled.scene, settled.scene.meters
    start, end = scene.terms.start, scene.terms.end
    credit = next(r for r in dr.credits(scene.event_id) if r.meter == a.address)
    assert (credit.baseline_wh, credit.actual_wh, credit.amount) == (POWER_W, 100, (POWER_W - 100) * RATE)

    # Meter a: event 1 credited (the settlement's figures, split over the two half hours), event 3 to come.
    reply = await api.get(f"{API}/meters/{a.address}/demand-response", headers=op)
    assert reply.status_code == 200
    first, future = reply.json()
    assert (first["event_id"], first["status"], first["baseline_kind"], first["opted_out"]) == (
        scene.event_id, "completed", "credited", False)
    assert (first["baseline_wh"], first["actual_wh"], first["credit_micropence"], first["period_id"]) == (
        credit.baseline_wh, credit.actual_wh, credit.amount, credit.period_id)
    assert first["credit_pounds"] == format_pounds(credit.amount)
    assert (first["start"], first["end"]) == (iso(start), iso(end))
    assert [(h["start"], h["baseline_wh"], h["actual_wh"]) for h in first["half_hours"]] == [
        (iso(start), POWER_W // 2, 50), (iso(start + PERIOD_SECONDS), POWER_W // 2, 50)]
    assert (future["event_id"], future["status"], future["baseline_kind"], future["baseline_wh"],
            future["actual_wh"], future["credit_micropence"]) == (settled.future, "far", None, None, None, None)
    assert len(future["half_hours"]) == 2 and future["half_hours"][0]["baseline_wh"] is None
    # Only the events whose window overlaps the range asked for.
    window = {"period_from": str(start), "period_to": str(end)}
    assert [e["event_id"] for e in (await api.get(f"{API}/meters/{a.address}/demand-response", headers=op,
                                                  params=window)).json()] == [scene.event_id]

    # Meter b: event 2 completed and not settled, its baseline computed now from the chain (provisional).
    measured = next(r.measurement for r in measure_event(dr, dr.event(settled.later)) if r.meter == b.address)
    assert measured is not None and (measured.baseline_wh, measured.actual_wh) == (POWER_W, 200)
    mine = (await api.get(f"{API}/meters/{b.address}/demand-response", headers=op)).json()
    later = next(e for e in mine if e["event_id"] == settled.later)
    assert (later["status"], later["baseline_kind"], later["baseline_wh"], later["actual_wh"],
            later["credit_micropence"]) == ("completed", "provisional", measured.baseline_wh, measured.actual_wh, None)
    assert sum(h["baseline_wh"] for h in later["half_hours"]) == measured.baseline_wh
    assert sum(h["actual_wh"] for h in later["half_hours"]) == measured.actual_wh
    # Meter c opted out of event 1: its window, no figures.
    (opted,) = (await api.get(f"{API}/meters/{c.address}/demand-response", headers=op)).json()
    assert (opted["opted_out"], opted["baseline_kind"], opted["baseline_wh"]) == (True, None, None)

    # The bill: the credit on chain against the open period, and the amount payable after it.
    on_chain = dr.credit_of(a.address, credit.period_id)
    assert on_chain == credit.amount
    customer = {"X-API-Key": add_customer(server, a, "meter-a")}
    bill = (await api.get(f"{API}/meters/{a.address}", headers=customer)).json()["open_bill"]
    assert (bill["period_id"], bill["demand_response_credit_micropence"]) == (credit.period_id, on_chain)
    assert bill["amount_due_micropence"] == dr.billing.bill(a.address).amount_due
    assert bill["amount_payable_micropence"] == bill["amount_due_micropence"] - on_chain
    assert bill["amount_payable_pounds"] == format_pounds(bill["amount_due_micropence"] - on_chain)
    (listed,) = (await api.get(f"{API}/meters/{a.address}/bills", headers=customer)).json()["results"]
    assert (listed["demand_response_credit_micropence"], listed["amount_payable_micropence"]) == (
        on_chain, bill["amount_payable_micropence"])
    fleet = {m["address"]: m["open_bill"] for m in (await api.get(f"{API}/meters", headers=op)).json()}
    assert fleet[a.address]["demand_response_credit_micropence"] == on_chain
    assert fleet[b.address]["demand_response_credit_micropence"] == 0  # credited, but no reduction
    # A customer sees their own meter's events only.
    reply = await api.get(f"{API}/meters/{b.address}/demand-response", headers=customer)
    assert (reply.status_code, reply.json()["error"]["code"]) == (403, "forbidden")
    dr.client.decoder = None
