"""``GET /api/v1/demand-response/events`` against a running server on the session's Ganache: an event
changed after notice shows its new modification number, each meter's opt state, and a customer sees
only their own meter."""

from __future__ import annotations

from dataclasses import replace

from common.chain import ChainClient
from common.demand_response import DemandResponse, Signal, Terms
from common.eip712 import sign_optout
from common.tariff import PERIOD_SECONDS
from tests.server.test_api import API, add_customer, api, op  # noqa: F401

HOUR = 3_600


async def test_events_show_their_modification_number_and_each_meters_participation(
    api, op, server, new_meter, chain: ChainClient,  # noqa: F811
) -> None:
    first, second = new_meter(region="north"), new_meter(region="north")
    dr = DemandResponse(chain, server.deployment)
    start = -(-(dr.billing.now() + 3 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
    terms = Terms(start, HOUR, HOUR, Signal.LEVEL, 2, 100_000)
    event_id = dr.create_event("dfs-api", terms, meters=[first.address, second.address])
    dr.modify_event(event_id, replace(terms, signal_value=3))
    dr.opt_out(event_id, second.address,
               sign_optout(bytes(second.key), server.deployment.demand_response_domain, event_id))

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
    forged = sign_optout(bytes(second.key), domain, event_id)
    reply = await api.post(url, headers=customer, json={"meter": first.address, "signature": forged})
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "invalid_request")
    reply = await api.post(url, headers=customer, json={"meter": second.address, "signature": forged})
    assert (reply.status_code, reply.json()["error"]["code"]) == (403, "forbidden")
    signature = sign_optout(bytes(first.key), domain, event_id)
    reply = await api.post(url, headers=customer, json={"meter": first.address, "signature": signature})
    assert reply.status_code == 200 and reply.json()["meter"] == first.address
    assert dr.opted_out(event_id) == {first.address, second.address}
    reply = await api.post(url, headers=customer, json={"meter": first.address, "signature": signature})
    assert (reply.status_code, reply.json()["error"]["code"]) == (409, "opt_out_refused")
    assert reply.json()["error"]["message"].startswith(f"AlreadyOptedOut({event_id}, ")
    chain.decoder = None
