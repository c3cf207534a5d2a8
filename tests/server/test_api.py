"""The REST API and live feed against a running server on a real Ganache: every route, its
filters and access rules, and that what it answers matches the chain."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from websockets.asyncio.client import connect

from common.billing import Billing
from common.eip712 import ReadingData
from common.messages import Bill, ConsumptionAlert
from common.tariff import CLOCK_LOCAL, PriceRule, TariffVersion
from server.api.auth import OPERATOR_KEY_FILE
from server.api.schemas import iso
from server.app import ServerApp
from tests.server.conftest import indexed, last_event, meters_indexed
from tests.server.test_gateway import next_of

API = "/api/v1"
HOUR = 3_600


def add_customer(app: ServerApp, account, name: str) -> str:
    """Give a meter a customer record (as provisioning does); returns the account's API key."""
    path = app.settings.data_dir / "customers.json"
    data = json.loads(path.read_text()) if path.exists() else {"customers": []}
    key = secrets.token_urlsafe(24)
    data["customers"].append({"meter": account.address, "meter_name": name, "account_ref": "0x" + "42" * 32,
                              "name": f"Holder of {name}", "address": "1 Test Street", "email": "t@example.org",
                              "api_key": key, "region": "north", "archetype": "medium"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return key


@pytest.fixture
async def api(server: ServerApp) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the server's API, without credentials."""
    async with httpx.AsyncClient(base_url=server.settings.http_url, timeout=20) as client:
        yield client


@pytest.fixture
def op(server: ServerApp) -> dict[str, str]:
    """The operator's credentials."""
    return {"X-API-Key": (server.settings.data_dir / "api" / OPERATOR_KEY_FILE).read_text().strip()}


@pytest.fixture
async def metered(server, new_meter, write_readings):
    """Two registered meters, the first with 6 hours of 10-minute readings (400 Wh each) ending an hour ago."""
    first, second = new_meter(region="north"), new_meter(region="south")
    start = (int(time.time()) - 86_400 + 7 * HOUR) // HOUR * HOUR  # after the opening a day ago
    rows = [(i, start + i * 600, 10_000 + i * 400) for i in range(1, 37)]
    position = await write_readings(first, rows)
    await indexed(server, position)
    return first, second, start


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# ---------------------------------------------------------------- credentials


async def test_health_needs_no_credentials_but_every_data_route_does(api, server):
    health = (await api.get(f"{API}/health")).json()
    assert health["status"] == "ok" and health["contract"] == server.deployment.address
    for path in ("/meters", "/bills", "/tariffs", "/grid-alerts", "/consumption-alerts", "/auth/me"):
        assert error_of(await api.get(API + path)) == (401, "unauthorized"), path
    assert error_of(await api.get(f"{API}/meters", headers={"X-API-Key": "not-a-key"})) == (401, "unauthorized")
    assert error_of(await api.get(f"{API}/meters", headers={"Authorization": "Basic abc"})) == (401, "unauthorized")
    assert error_of(await api.get(f"{API}/meters", headers={"Authorization": "Bearer v1.0xab.1.ff"})) == (
        401, "unauthorized")


async def test_operator_sees_every_meter_with_state_matching_the_chain(api, op, metered, billing: Billing):
    first, second, _ = metered
    listed = {m["address"]: m for m in (await api.get(f"{API}/meters", headers=op)).json()}
    assert {first.address, second.address} <= set(listed)
    detail = (await api.get(f"{API}/meters/{first.address}", headers=op)).json()
    assert detail == listed[first.address]
    view, bill = billing.meter(first.address), billing.bill(first.address)
    assert (detail["status"], detail["region"], detail["account_ref"]) == ("active", "north", view.account_ref)
    assert detail["last_reading"]["seq"] == view.last_seq == 36
    assert detail["last_reading"]["register_wh"] == view.last_energy_wh
    open_bill = detail["open_bill"]
    assert (open_bill["period_id"], open_bill["status"]) == (bill.period_id, "open")
    assert open_bill["energy_wh"] == bill.period_energy_wh == 36 * 400
    assert open_bill["energy_charge_micropence"] == bill.energy_cost
    assert open_bill["standing_charge_micropence"] == bill.standing_charge
    assert open_bill["amount_due_micropence"] == bill.amount_due
    assert detail["connected"] is False and detail["hourly_limit_wh"] == 3_000


async def test_unknown_and_malformed_meters_get_not_found_and_invalid_request(api, op):
    assert error_of(await api.get(f"{API}/meters/{Account.create().address}", headers=op)) == (404, "not_found")
    assert error_of(await api.get(f"{API}/meters/0x1234", headers=op)) == (422, "invalid_request")
    assert error_of(await api.get(f"{API}/no-such-route", headers=op)) == (404, "not_found")


# ---------------------------------------------------------------- customers


async def test_a_customer_key_sees_only_its_own_meter(api, server, metered):
    first, second, _ = metered
    key = {"X-API-Key": add_customer(server, first, "meter-a")}
    mine = (await api.get(f"{API}/meters", headers=key)).json()
    assert [m["address"] for m in mine] == [first.address]
    assert mine[0]["name"] == "meter-a" and mine[0]["customer"]["name"] == "Holder of meter-a"
    assert (await api.get(f"{API}/auth/me", headers=key)).json() == {"role": "customer", "meter": first.address}
    other = second.address
    for path in (f"/meters/{other}", f"/meters/{other}/readings", f"/meters/{other}/bills",
                 f"/meters/{other}/threshold", f"/meters/{other}/consumption-alerts", f"/bills?meter={other}"):
        assert error_of(await api.get(API + path, headers=key)) == (403, "forbidden"), path
    refused = await api.put(f"{API}/meters/{other}/threshold", headers=key, json={"hourly_limit_wh": 1})
    assert error_of(refused) == (403, "forbidden")
    bills = (await api.get(f"{API}/bills", headers=key)).json()
    assert {b["meter"] for b in bills["results"]} == {first.address}
    # Another meter's existence is not revealed either: an unknown address is also forbidden.
    assert error_of(await api.get(f"{API}/meters/{Account.create().address}", headers=key)) == (403, "forbidden")


def sign(account, typed_data: dict) -> str:
    return "0x" + bytes(account.sign_message(encode_typed_data(full_message=typed_data)).signature).hex()


async def test_signing_in_with_the_meters_key_gives_a_token_for_that_meter_only(api, metered):
    first, second, _ = metered
    challenge = (await api.post(f"{API}/auth/challenge", params={"meter": first.address})).json()
    body = {"meter": first.address, "nonce": challenge["nonce"], "signature": sign(first, challenge["typed_data"])}
    issued = await api.post(f"{API}/auth/token", json=body)
    assert issued.status_code == 200, issued.text
    token = {"Authorization": f"Bearer {issued.json()['token']}"}
    assert (await api.get(f"{API}/auth/me", headers=token)).json() == {"role": "customer", "meter": first.address}
    assert (await api.get(f"{API}/meters/{first.address}", headers=token)).status_code == 200
    assert error_of(await api.get(f"{API}/meters/{second.address}", headers=token)) == (403, "forbidden")
    # The nonce is good once: replaying the same signed login is refused.
    assert error_of(await api.post(f"{API}/auth/token", json=body)) == (401, "challenge_mismatch")
    # A challenge signed by another key is refused.
    challenge = (await api.post(f"{API}/auth/challenge", params={"meter": first.address})).json()
    forged = {"meter": first.address, "nonce": challenge["nonce"], "signature": sign(second, challenge["typed_data"])}
    assert error_of(await api.post(f"{API}/auth/token", json=forged)) == (401, "bad_login_signature")
    # A tampered token is refused.
    bad = {"Authorization": token["Authorization"][:-4] + "0000"}
    assert error_of(await api.get(f"{API}/auth/me", headers=bad)) == (401, "unauthorized")


async def test_an_unregistered_key_cannot_sign_in(api):
    stranger = Account.create()
    challenge = (await api.post(f"{API}/auth/challenge", params={"meter": stranger.address})).json()
    signature = sign(stranger, challenge["typed_data"])
    body = {"meter": stranger.address, "nonce": challenge["nonce"], "signature": signature}
    assert error_of(await api.post(f"{API}/auth/token", json=body)) == (401, "unknown_meter")


# ---------------------------------------------------------------- readings


async def test_readings_page_through_newest_first_with_links(api, op, metered):
    first, _, start = metered
    url = f"{API}/meters/{first.address}/readings"
    page1 = (await api.get(url, headers=op, params={"page_size": 10})).json()
    assert page1["count"] == 36 and page1["previous"] is None and "page=2" in page1["next"]
    assert [r["seq"] for r in page1["results"]] == list(range(36, 26, -1))
    last = (await api.get(page1["next"].replace("page=2", "page=4"), headers=op)).json()
    assert [r["seq"] for r in last["results"]] == [6, 5, 4, 3, 2, 1] and last["next"] is None
    oldest = (await api.get(url, headers=op, params={"order_by": "period", "page_size": 2})).json()["results"]
    assert [(r["seq"], r["energy_wh"], r["register_wh"]) for r in oldest] == [(1, 10_000 + 400 - 10_000, 10_400),
                                                                              (2, 400, 10_800)]
    assert oldest[1]["interval_start"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 600))
    assert oldest[1]["tx_hash"].startswith("0x") and oldest[1]["consumption_kwh"] == 0.4


async def test_readings_are_filtered_by_period(api, op, metered):
    first, _, start = metered
    url = f"{API}/meters/{first.address}/readings"
    window = {"period_from": str(start + HOUR), "period_to": str(start + 2 * HOUR), "order_by": "period"}
    rows = (await api.get(url, headers=op, params=window)).json()["results"]
    assert [r["seq"] for r in rows] == [6, 7, 8, 9, 10, 11]
    iso_window = {"period_from": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + HOUR)),
                  "period_to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 2 * HOUR))}
    assert (await api.get(url, headers=op, params=iso_window)).json()["count"] == 6
    assert error_of(await api.get(url, headers=op, params={"period_from": "yesterday"})) == (422, "invalid_request")
    assert error_of(await api.get(url, headers=op, params={"period_from": "200", "period_to": "100"})) == (
        422, "invalid_request")
    assert error_of(await api.get(url, headers=op, params={"page_size": 0})) == (422, "invalid_request")
    assert error_of(await api.get(url, headers=op, params={"order_by": "seq"})) == (422, "invalid_request")


async def test_readings_group_by_hour_and_day_total_the_register(api, op, metered, billing):
    first, _, start = metered
    url = f"{API}/meters/{first.address}/readings"
    hours = (await api.get(url, headers=op, params={"group_by": "hour", "order_by": "period"})).json()
    # The first reading covers the time since opening (a day ago): its 400 Wh spread over those hours.
    in_window = [h for h in hours["results"] if h["interval_start"] >= time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + HOUR))]
    assert [h["energy_wh"] for h in in_window] == [2_400] * 5
    assert sum(h["energy_wh"] for h in hours["results"]) == billing.bill(first.address).period_energy_wh == 14_400
    assert "seq" not in hours["results"][0]
    days = (await api.get(url, headers=op, params={"group_by": "day"})).json()
    assert sum(d["energy_wh"] for d in days["results"]) == 14_400 and 1 <= days["count"] <= 2
    assert error_of(await api.get(url, headers=op, params={"group_by": "year"})) == (422, "invalid_request")


# ---------------------------------------------------------------- bills and tariffs


async def test_closing_a_period_issues_a_bill_listed_with_filters(api, op, server, metered, billing):
    first, second, _ = metered
    before = billing.bill(first.address)
    receipt = await asyncio.to_thread(billing.close_billing_period, first.address)
    await indexed(server, last_event(receipt))
    url = f"{API}/meters/{first.address}/bills"
    issued = (await api.get(url, headers=op, params={"status": "issued"})).json()["results"]
    assert len(issued) == 1
    bill = issued[0]
    assert (bill["period_id"], bill["status"], bill["energy_wh"]) == (1, "issued", before.period_energy_wh)
    assert bill["amount_due_micropence"] == before.amount_due and bill["tx_hash"] == "0x" + receipt[
        "transactionHash"].hex().removeprefix("0x")
    opened = (await api.get(url, headers=op, params={"status": "open"})).json()["results"]
    assert [(b["period_id"], b["amount_due_micropence"]) for b in opened] == [(2, 0)]
    everything = (await api.get(f"{API}/bills", headers=op, params={"meter": first.address})).json()
    assert everything["count"] == 2
    rich = (await api.get(f"{API}/bills", headers=op, params={"min_amount_micropence": before.amount_due})).json()
    assert first.address in {b["meter"] for b in rich["results"]}
    assert second.address not in {b["meter"] for b in rich["results"]}


async def test_tariff_history_lists_every_version_newest_first_with_its_pricing(snapshot, api, op, server, billing):
    bands = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]
    version = TariffVersion(0, 60_000, PriceRule.banded(bands, [8_500, 24_670, 35_000]), PriceRule.flat(15_000),
                            CLOCK_LOCAL)
    await indexed(server, last_event(await asyncio.to_thread(billing.set_tariff, version)))
    tariffs = (await api.get(f"{API}/tariffs", headers=op)).json()
    newest = tariffs[0]
    assert newest["version"] == len(billing.versions()) and newest["clock"] == "local"
    assert newest["standing_charge_millipence_per_day"] == 60_000
    assert newest["import_pricing"] == {"kind": "banded", "rate": 0, "bands": bands,
                                        "band_rates": [8_500, 24_670, 35_000, 0, 0, 0, 0, 0]}
    assert newest["export_pricing"] == {"kind": "flat", "rate": 15_000, "bands": None, "band_rates": None}
    assert tariffs[-1]["version"] == 1 and tariffs[-1]["import_pricing"]["kind"] == "flat"
    assert [t["version"] for t in tariffs] == sorted((t["version"] for t in tariffs), reverse=True)


async def test_half_hourly_settlement_periods_carry_import_export_price_cost_and_whether_estimated(
        api, op, server, new_meter, write_readings, billing):
    meter = new_meter()
    opened = billing.meter(meter.address).last_timestamp
    base = (opened // 1_800 + 2) * 1_800
    # Readings every 10 minutes for an hour from base, then a 2-hour gap, then one more 10 minutes later.
    rows = [(1, base, 10_050, 0), (2, base + 600, 10_100, 0), (3, base + 1_200, 10_200, 30),
            (4, base + 1_800, 10_300, 60), (5, base + 2_400, 10_400, 90), (6, base + 3_000, 10_500, 120),
            (7, base + 3_600, 10_600, 150), (8, base + 10_800, 11_800, 150), (9, base + 11_400, 11_900, 160)]
    await indexed(server, await write_readings(meter, rows))
    url = f"{API}/meters/{meter.address}/readings"
    page = (await api.get(url, headers=op, params={"group_by": "halfhour", "period_from": base,
                                                   "order_by": "period"})).json()
    periods = page["results"]
    assert page["count"] == len(periods) == 7  # base .. base + 3.5 h, which the readings cover
    assert [p["interval_start"] for p in periods][:2] == [iso(base), iso(base + 1_800)]
    assert sum(p["import_wh"] for p in periods) == 11_900 - 10_050
    assert sum(p["export_wh"] for p in periods) == 160
    schedule = billing.schedule()
    for p in periods:
        prices = schedule.prices(time_of(p["interval_start"]) // 1_800)
        assert (p["import_price_millipence_per_kwh"], p["export_price_millipence_per_kwh"]) == prices
        assert p["import_cost_micropence"] == p["import_wh"] * prices[0]
    # Read every 10 minutes: actual. Spanned by the 2-hour gap, or not yet read to its end: estimated.
    assert [p["status"] for p in periods] == ["actual", "actual"] + ["estimated"] * 5
    assert all(p["estimated"] == (p["status"] == "estimated") for p in periods)
    assert periods[0]["settlement_date"] and 1 <= periods[0]["settlement_period"] <= 50
    later = [(10, base + 12_600, 12_000, 170)]
    await indexed(server, await write_readings(meter, later))
    again = (await api.get(url, headers=op, params={"group_by": "halfhour", "period_from": base + 10_800})).json()
    assert [p["status"] for p in again["results"]] == ["actual"]  # the later reading made it actual
    bands = (await api.get(f"{API}/meters/{meter.address}/band-costs", headers=op,
                           params={"period_from": base})).json()
    assert sum(b["import_wh"] for b in bands) == 12_000 - 10_050
    assert sum(b["import_cost_micropence"] for b in bands) == sum(
        p["import_cost_micropence"] for p in periods) + again["results"][0]["import_cost_micropence"] - periods[-1][
        "import_cost_micropence"]


def time_of(text: str) -> int:
    import datetime as dt

    return int(dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp())


# ---------------------------------------------------------------- grid alerts


async def test_grid_alerts_active_and_past_and_by_region(api, op, server, metered, billing):
    first, _, _ = metered
    customer = {"X-API-Key": add_customer(server, first, "meter-a")}
    expires = int(time.time()) + 600
    north = await asyncio.to_thread(billing.raise_grid_alert, 1, "reduce_usage", "north", "Please ease off", expires)
    south = await asyncio.to_thread(billing.raise_grid_alert, 2, "frequency_dip", "south", "South dip", expires)
    north_id = billing.events("GridAlert", north)[0]["args"]["id"]
    south_id = billing.events("GridAlert", south)[0]["args"]["id"]
    await indexed(server, last_event(await asyncio.to_thread(billing.clear_grid_alert, south_id)))
    active = (await api.get(f"{API}/grid-alerts", headers=op, params={"active": "true"})).json()["results"]
    assert north_id in {a["id"] for a in active} and south_id not in {a["id"] for a in active}
    past = (await api.get(f"{API}/grid-alerts", headers=op, params={"active": "false"})).json()["results"]
    cleared = next(a for a in past if a["id"] == south_id)
    assert cleared["cleared_at"] is not None and cleared["active"] is False and cleared["severity"] == "critical"
    raised = next(a for a in active if a["id"] == north_id)
    assert (raised["kind"], raised["region"], raised["message"], raised["severity"]) == (
        "reduce_usage", "north", "Please ease off", "warning")
    # A customer in the north sees northern (and all-region) alerts, not southern ones.
    seen = {a["id"] for a in (await api.get(f"{API}/grid-alerts", headers=customer)).json()["results"]}
    assert north_id in seen and south_id not in seen
    await asyncio.to_thread(billing.clear_grid_alert, north_id)


# ---------------------------------------------------------------- thresholds and live notifications


async def test_threshold_is_set_by_customer_or_operator_and_reset_to_default(api, op, server, metered):
    first, _, _ = metered
    customer = {"X-API-Key": add_customer(server, first, "meter-a")}
    url = f"{API}/meters/{first.address}/threshold"
    assert (await api.get(url, headers=customer)).json()["source"] == "default"
    assert (await api.put(url, headers=customer, json={"hourly_limit_wh": 1_500})).json()["hourly_limit_wh"] == 1_500
    assert (await api.get(url, headers=op)).json() | {} == {"meter": first.address, "hourly_limit_wh": 1_500,
                                                           "source": "meter", "jump_factor": 3.0, "jump_min_w": 1_000}
    assert (await api.put(url, headers=op, json={"hourly_limit_wh": None})).json()["source"] == "default"
    assert error_of(await api.put(url, headers=op, json={"hourly_limit_wh": -5})) == (422, "invalid_request")
    assert error_of(await api.put(url, headers=op, json={})) == (422, "invalid_request")


async def live(server: ServerApp, **creds: str):
    query = "&".join(f"{k}={v}" for k, v in creds.items())
    return connect(f"ws://{server.settings.server_host}:{server.settings.http_port}{API}/live?{query}")


async def next_live(ws, kind: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic())))
        if message["type"] == kind:
            return message


async def test_an_hour_over_the_limit_notifies_the_meter_and_the_dashboard_at_once(
        api, op, server, new_meter, link_for):
    meter = new_meter()
    await meters_indexed(server, meter.address)
    set_limit = await api.put(f"{API}/meters/{meter.address}/threshold", headers=op, json={"hourly_limit_wh": 200})
    assert set_limit.status_code == 200, set_limit.text
    link = link_for(meter)
    await link.connect()
    async with await live(server, key=op["X-API-Key"]) as dashboard:
        assert (await next_live(dashboard, "hello"))["role"] == "operator"
        now = int(time.time())
        await link.send_reading(ReadingData(meter.address, 1, now - 600, 10_100))
        await next_of(link, Bill)
        assert (await next_live(dashboard, "bill"))["meter"]["address"] == meter.address
        # 600 Wh in five minutes: at least 300 Wh in one clock hour, over the 200 Wh limit.
        await link.send_reading(ReadingData(meter.address, 2, now - 300, 10_700))
        alert = await next_of(link, ConsumptionAlert)
        assert alert.meter == meter.address and alert.limit_wh == 200 and alert.kind == "hourly_limit"
        pushed = (await next_live(dashboard, "consumption_alert"))["alert"]
        assert (pushed["meter"], pushed["kind"], pushed["limit_wh"]) == (meter.address, "hourly_limit", 200)
    stored = (await api.get(f"{API}/meters/{meter.address}/consumption-alerts", headers=op)).json()
    assert stored["count"] in (1, 2) and all(a["energy_wh"] > 200 for a in stored["results"])
    assert pushed["id"] in {a["id"] for a in stored["results"]}
    await link.close()


async def test_live_feed_gives_a_customer_only_their_own_bills(server, metered, new_meter, link_for):
    first, _, _ = metered
    other = new_meter()
    key = add_customer(server, first, "meter-a")
    async with await live(server, key=key) as customer:
        assert await next_live(customer, "hello") == {"type": "hello", "role": "customer", "meter": first.address,
                                                      "timezone": "Europe/London"}
        for account, seq, wh in ((other, 1, 10_050), (first, 37, 10_000 + 36 * 400 + 60)):
            link = link_for(account)
            await link.connect()
            await link.send_reading(ReadingData(account.address, seq, int(time.time()) - 5, wh))
            await next_of(link, Bill)
            await link.close()
        bill = await next_live(customer, "bill")
        assert bill["meter"]["address"] == first.address and bill["meter"]["last_reading"]["seq"] == 37


async def test_live_feed_gives_a_customer_the_grid_alerts_of_their_region_only(server, metered, billing):
    first, _, _ = metered  # in the north
    key = add_customer(server, first, "meter-a")
    expires = int(time.time()) + 600
    async with await live(server, key=key) as customer:
        await next_live(customer, "hello")
        raised = []
        for region in ("south", "north", ""):
            receipt = await asyncio.to_thread(billing.raise_grid_alert, 0, "notice", region, f"for {region}", expires)
            raised.append(billing.events("GridAlert", receipt)[0]["args"]["id"])
        seen = [(await next_live(customer, "grid_alert"))["alert"]["id"] for _ in range(2)]
        assert seen == raised[1:]
    for alert_id in raised:
        await asyncio.to_thread(billing.clear_grid_alert, alert_id)


async def test_live_feed_refuses_unknown_credentials_with_a_code(server):
    async with await live(server, key="wrong") as ws:
        assert json.loads(await ws.recv()) == {"type": "error", "code": "unauthorized",
                                               "message": "this API key is not known"}
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1008


# ---------------------------------------------------------------- description


async def test_openapi_describes_every_route(api):
    spec = (await api.get(f"{API}/openapi.json")).json()
    paths = set(spec["paths"])
    assert {f"{API}{p}" for p in ("/health", "/auth/challenge", "/auth/token", "/auth/me", "/meters",
                                  "/meters/{address}", "/meters/{address}/readings", "/meters/{address}/bills",
                                  "/bills", "/meters/{address}/threshold", "/meters/{address}/consumption-alerts",
                                  "/consumption-alerts", "/tariffs", "/grid-alerts")} <= paths
    readings = spec["paths"][f"{API}/meters/{{address}}/readings"]["get"]
    assert {"period_from", "period_to", "page", "page_size", "order_by", "group_by"} <= {
        p["name"] for p in readings["parameters"]}
