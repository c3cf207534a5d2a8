"""The REST API and live feed against a running server on a real Ganache: every route, its
filters and access rules, and that what it answers matches the chain. The tests of the routes that
read the index run with the index in SQLite and in PostgreSQL (``both_indexes``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from playwright.async_api import async_playwright, expect
from websockets.asyncio.client import ClientConnection, connect

from common.billing import Billing
from common.eip712 import ReadingData
from common.logs import fingerprint
from common.messages import Bill, ConsumptionAlert
from common.tariff import CLOCK_LOCAL, PriceRule, TariffVersion
from server.api.auth import OPERATOR_KEY_FILE, dashboard_link
from server.api.challenges import ChallengeSigner
from server.api.routes import MAX_AMOUNT, MAX_PAGE, parse_time
from server.api.schemas import ERROR_CODES, iso
from server.api.throttle import ClientLimiter, TooManyRequests, client_key
from server.app import ServerApp
from tests.server.api.test_dashboard import CHROMIUM, LAUNCH_ARGS, UI_TIMEOUT_MS
from tests.server.conftest import indexed, last_event, meters_indexed
from tests.server.endpoint.test_gateway import next_of
from tests.support import both_indexes

API = "/api/v1"
HOUR = 3_600
LONDON = ZoneInfo("Europe/London")


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


def test_the_dashboard_link_carries_the_operators_key_only_when_asked_to(server_settings):
    key_file = server_settings.data_dir / "api" / OPERATOR_KEY_FILE
    key_file.parent.mkdir(parents=True)
    key_file.write_text("op-key-0123456789\n")
    assert dashboard_link(server_settings) == f"{server_settings.http_url}/#key=op-key-0123456789"
    kept = dashboard_link(server_settings, signed_in=False)  # for a log: where the key is, never the key
    assert kept == f"{server_settings.http_url}/ (sign in with the operator's key: {key_file})"
    assert dashboard_link(server_settings.replace(http_port=0)) == ""


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


@both_indexes
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


async def test_numbers_and_times_out_of_range_are_refused_with_422_not_a_server_failure(api, op, server, new_meter):
    meter = new_meter()
    await meters_indexed(server, meter.address)
    m = f"/meters/{meter.address}"
    for path, params in (
            (f"{m}/readings", {"page": str(10**30)}),
            ("/bills", {"page": "4611686018427387904", "page_size": "10000"}),
            ("/bills", {"min_amount_micropence": "9223372036854775808"}),
            (f"{m}/bills", {"page": str(MAX_PAGE + 1)}),
            (f"{m}/consumption-alerts", {"page": "86695328462575072", "page_size": "2546"}),
            ("/consumption-alerts", {"page": str(MAX_PAGE + 1)}),
            ("/grid-alerts", {"page": str(MAX_PAGE + 1)}),
            (f"{m}/readings", {"period_from": "²"}),  # str.isdigit says yes
            (f"{m}/readings", {"period_from": "１７９００００００"}),  # full-width digits: int() takes them
            (f"{m}/readings", {"period_from": "1", "period_to": "99999999999999999999"}),
            (f"{m}/readings", {"period_to": "9999-12-31T23:59:59-23:59"}),  # after 9999 in UTC
            (f"{m}/readings", {"period_from": "1969-12-31T23:00:00+00:00"}),
            (f"{m}/readings", {"period_from": "2026-02-30"}),
            (f"{m}/bills", {"period_to": "2026-13-01"}),
            (f"{m}/readings", {"period_from": "2026-11-24T10:00:00" + "0" * 40}),
    ):
        assert error_of(await api.get(API + path, headers=op, params=params)) == (422, "invalid_request"), params
    # The bounds themselves are fine.
    for path, params in ((f"{m}/readings", {"page": str(MAX_PAGE), "page_size": "10000"}),
                         ("/bills", {"min_amount_micropence": str(MAX_AMOUNT)}),
                         (f"{m}/readings", {"period_from": "0", "period_to": "9999-12-31T23:59:59+00:00"})):
        answer = await api.get(API + path, headers=op, params=params)
        assert answer.status_code == 200 and answer.json()["results"] == [], params
    # A body that is not JSON is invalid too, and a wrong method is told which ones are allowed.
    garbled = await api.put(f"{API}{m}/threshold", headers=op | {"Content-Type": "application/json"},
                            content=b"\xff\xfe=")
    assert error_of(garbled) == (422, "invalid_request")
    wrong = await api.delete(f"{API}{m}/threshold", headers=op)
    assert error_of(wrong) == (405, "method_not_allowed") and wrong.headers["Allow"] == "GET, PUT"
    # A bearer token with characters beyond ASCII is refused as unknown, not a failure.
    odd = {"Authorization": "Bearer v1.a.1.\xe9".encode("latin-1")}
    assert error_of(await api.get(f"{API}/auth/me", headers=odd)) == (401, "unauthorized")


def test_query_times_are_unix_seconds_in_ascii_digits_or_iso_8601_within_bounds():
    assert parse_time("1790000000", "t", LONDON, 0) == 1_790_000_000
    assert parse_time("2026-07-01", "t", LONDON, 0) == int(dt.datetime(2026, 6, 30, 23, tzinfo=dt.timezone.utc)
                                                          .timestamp())
    assert parse_time(None, "t", LONDON, 7) == 7
    for bad in ("²", "１", "-5", "253402300800", "1e9", "2026-11-24T25:00"):
        with pytest.raises(Exception) as refused:
            parse_time(bad, "t", LONDON, 0)
        assert getattr(refused.value, "code", None) == "invalid_request", bad


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
    # No challenge for a meter the chain does not know: they could only fill memory.
    refused = await api.post(f"{API}/auth/challenge", params={"meter": stranger.address})
    assert error_of(refused) == (401, "unknown_meter")
    body = {"meter": stranger.address, "nonce": "0x" + "11" * 32, "signature": "0x" + "22" * 65}
    assert error_of(await api.post(f"{API}/auth/token", json=body)) == (401, "challenge_mismatch")


async def test_a_nonce_signs_in_only_the_meter_it_was_issued_for(api, metered):
    first, second, _ = metered
    challenge = (await api.post(f"{API}/auth/challenge", params={"meter": second.address})).json()
    typed = challenge["typed_data"] | {"message": {"meter": first.address, "nonce": challenge["nonce"]}}
    body = {"meter": first.address, "nonce": challenge["nonce"], "signature": sign(first, typed)}
    assert error_of(await api.post(f"{API}/auth/token", json=body)) == (401, "challenge_mismatch")


# ---------------------------------------------------------------- sign-in floods


def test_a_nonce_is_good_for_its_meter_until_it_expires_and_once():
    signer, meter, other = ChallengeSigner(b"k" * 32, ttl=30), "0x" + "c0" * 20, "0x" + "c1" * 20
    nonce, expires = signer.issue(meter, 1_000.0)
    assert expires == 1_030 and ChallengeSigner.expiry(nonce) == 1_030 and len(nonce) == 32
    assert signer.check(meter.upper().replace("0X", "0x"), nonce, 1_029.0) is None
    assert signer.check(other, nonce, 1_001.0) == "mismatch"
    assert ChallengeSigner(b"j" * 32, ttl=30).check(meter, nonce, 1_001.0) == "mismatch"  # another server's key
    assert signer.check(meter, nonce, 1_030.5) == "expired"
    # A later expiry written into the nonce breaks its MAC.
    assert signer.check(meter, (2_000).to_bytes(8, "big") + nonce[8:], 1_001.0) == "mismatch"
    signer.spend(nonce, 1_001.0)
    assert signer.check(meter, nonce, 1_002.0) == "used" and len(signer) == 1
    # A used nonce is remembered only until it expires; by then it is refused as expired anyway.
    fresh, _ = signer.issue(meter, 1_040.0)
    signer.spend(fresh, 1_040.0)
    assert len(signer) == 1


def test_a_million_issued_challenges_leave_nothing_held_on_the_server():
    signer, customer = ChallengeSigner(b"k" * 32, ttl=30), "0x" + "c0" * 20
    mine, _ = signer.issue(customer, 0.0)
    for i in range(100_000):
        signer.issue(customer if i % 2 else f"0x{i:040x}", i / 10_000)
    assert len(signer) == 0 and signer.check(customer, mine, 10.0) is None


def test_a_client_past_its_rate_is_told_when_to_retry_and_ipv6_hosts_count_by_their_64():
    limiter = ClientLimiter(rate=0.5, burst=3, max_clients=2)
    for _ in range(3):
        limiter.check("192.0.2.7", 10.0)
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("192.0.2.7", 10.0)
    assert refused.value.code == "rate_limited" and refused.value.retry_after == 2
    limiter.check("192.0.2.7", 12.0)  # a token back after 2 s
    limiter.check("192.0.2.8", 12.0)
    limiter.check("192.0.2.9", 12.0)
    assert len(limiter) == 2  # the least recently seen client was forgotten
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" and client_key(None) == ""


async def test_a_flooding_address_gets_429_and_a_customers_pending_challenge_survives_the_flood(
        server_settings, deployment, new_meter):
    customer, *others = [new_meter() for _ in range(3)]
    settings = server_settings.replace(api_signin_rate_per_second=0.1, api_signin_burst=10)
    app = await ServerApp.start(settings, deployment)
    flooding = httpx.AsyncHTTPTransport(local_address="127.0.0.2")  # another loopback address: another client
    try:
        await meters_indexed(app, customer.address, *(m.address for m in others))
        async with httpx.AsyncClient(base_url=settings.http_url, timeout=20) as api, \
                httpx.AsyncClient(base_url=settings.http_url, timeout=20, transport=flooding) as flood:
            mine = (await api.post(f"{API}/auth/challenge", params={"meter": customer.address})).json()
            targets, began = [customer, *others] * 14, time.monotonic()
            answered = [await flood.post(f"{API}/auth/challenge", params={"meter": m.address}) for m in targets]
            issued = [r for r in answered if r.status_code == 200]
            refused = [r for r in answered if r.status_code != 200]
            # The burst, and one more per 10 s the flood took.
            assert 10 <= len(issued) <= 11 + (time.monotonic() - began) / 10 and len(issued) + len(refused) == 42
            assert {error_of(r) for r in refused} == {(429, "rate_limited")}
            assert all(1 <= int(r.headers["Retry-After"]) <= 10 for r in refused)
            # The flood asked for the customer's own meter too, yet their challenge still signs in,
            # and their address was never slowed down by the flooding one.
            body = {"meter": customer.address, "nonce": mine["nonce"], "signature": sign(customer, mine["typed_data"])}
            signed_in = await api.post(f"{API}/auth/token", json=body)
            assert signed_in.status_code == 200, signed_in.text
    finally:
        await app.stop()


async def test_a_flood_from_60_addresses_for_the_customers_meter_leaves_their_challenge_good(api, metered):
    customer, _, _ = metered
    mine = (await api.post(f"{API}/auth/challenge", params={"meter": customer.address})).json()
    for host in range(10, 70):  # 127.0.1.10-69: sixty clients, each well within its own rate
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.1.{host}")
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=20, transport=transport) as flood:
            answered = await flood.post(f"{API}/auth/challenge", params={"meter": customer.address})
            assert answered.status_code == 200, answered.text
    body = {"meter": customer.address, "nonce": mine["nonce"], "signature": sign(customer, mine["typed_data"])}
    signed_in = await api.post(f"{API}/auth/token", json=body)
    assert signed_in.status_code == 200, signed_in.text
    assert error_of(await api.post(f"{API}/auth/token", json=body)) == (401, "challenge_mismatch")  # once only


# ---------------------------------------------------------------- readings


@both_indexes
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


@both_indexes
async def test_readings_are_filtered_by_period(api, op, metered):
    first, _, start = metered
    url = f"{API}/meters/{first.address}/readings"
    window = {"period_from": str(start + HOUR), "period_to": str(start + 2 * HOUR), "order_by": "period"}
    rows = (await api.get(url, headers=op, params=window)).json()["results"]
    # Readings count where their energy lies: seq 7 runs from start + 1 h to start + 1 h 10 min.
    assert [(r["seq"], r["energy_in_window_wh"]) for r in rows] == [(seq, 400) for seq in range(7, 13)]
    iso_window = {"period_from": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + HOUR)),
                  "period_to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 2 * HOUR))}
    assert (await api.get(url, headers=op, params=iso_window)).json()["count"] == 6
    assert error_of(await api.get(url, headers=op, params={"period_from": "yesterday"})) == (422, "invalid_request")
    assert error_of(await api.get(url, headers=op, params={"period_from": "200", "period_to": "100"})) == (
        422, "invalid_request")
    assert error_of(await api.get(url, headers=op, params={"page_size": 0})) == (422, "invalid_request")
    assert error_of(await api.get(url, headers=op, params={"order_by": "seq"})) == (422, "invalid_request")


@both_indexes
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


async def test_any_windows_readings_add_up_to_the_same_energy_as_its_hours_and_days(api, op, server, new_meter,
                                                                                   write_readings):
    rng = random.Random(8)
    meter = new_meter()
    ts, register, rows = int(time.time()) - 20 * HOUR, 10_000, []
    for seq in range(1, 81):
        step = rng.choice([60, 600, 1_800, rng.randint(1, 1_500)])
        ts, register = ts + step, register + rng.randint(0, step // 2)
        rows.append((seq, ts, register))
    await indexed(server, await write_readings(meter, rows))
    url = f"{API}/meters/{meter.address}/readings"
    for i in range(20):
        a, b = sorted(rng.randint(rows[0][1] - 2 * HOUR, ts + HOUR) for _ in range(2))
        window = {"period_from": str(a), "period_to": str(b + 1)}
        if i % 4 == 0:  # as ISO 8601 in local time
            window = {k: dt.datetime.fromtimestamp(int(v), LONDON).replace(tzinfo=None).isoformat()
                      for k, v in window.items()}
        listed = (await api.get(url, headers=op, params=window | {"page_size": 10_000})).json()
        in_window = sum(r["energy_in_window_wh"] for r in listed["results"])
        assert listed["count"] == len(listed["results"])
        assert all(0 <= r["energy_in_window_wh"] <= r["energy_wh"] for r in listed["results"])
        for group_by in ("hour", "day"):
            grouped = (await api.get(url, headers=op, params=window | {"group_by": group_by})).json()
            assert sum(g["energy_wh"] for g in grouped["results"]) == in_window, (window, group_by)
    everything = (await api.get(url, headers=op, params={"page_size": 10_000})).json()["results"]
    assert sum(r["energy_in_window_wh"] for r in everything) == register - 10_000


# ---------------------------------------------------------------- bills and tariffs


@both_indexes
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


@both_indexes
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


@both_indexes
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


@both_indexes
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


def live_url(server: ServerApp) -> str:
    return f"ws://{server.settings.server_host}:{server.settings.http_port}{API}/live"


@asynccontextmanager
async def live(server: ServerApp, **creds: str) -> AsyncIterator[ClientConnection]:
    """The live feed signed in as the dashboard does: the credentials (``key=`` or ``token=``) in the first message."""
    async with connect(live_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", **creds}))
        yield ws


async def next_live(ws, kind: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic())))
        if message["type"] == kind:
            return message


@both_indexes
async def test_an_hour_over_the_limit_notifies_the_meter_and_the_dashboard_at_once(
        api, op, server, new_meter, link_for):
    meter = new_meter()
    await meters_indexed(server, meter.address)
    set_limit = await api.put(f"{API}/meters/{meter.address}/threshold", headers=op, json={"hourly_limit_wh": 200})
    assert set_limit.status_code == 200, set_limit.text
    link = link_for(meter)
    await link.connect()
    async with live(server, key=op["X-API-Key"]) as dashboard:
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
    async with live(server, key=key) as customer:
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
    async with live(server, key=key) as customer:
        await next_live(customer, "hello")
        raised = []
        for region in ("south", "north", ""):
            receipt = await asyncio.to_thread(billing.raise_grid_alert, 0, "notice", region, f"for {region}", expires)
            raised.append(billing.events("GridAlert", receipt)[0]["args"]["id"])
        seen = [(await next_live(customer, "grid_alert"))["alert"]["id"] for _ in range(2)]
        assert seen == raised[1:]
    for alert_id in raised:
        await asyncio.to_thread(billing.clear_grid_alert, alert_id)


async def test_live_feed_refuses_unknown_credentials_with_a_code_naming_the_key_by_its_fingerprint_only(server):
    async with live(server, key="wrong-key-0123456789") as ws:
        refusal = json.loads(await ws.recv())
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1008
    assert refusal == {"type": "error", "code": "unauthorized",
                       "message": f"this API key is not known ({fingerprint('wrong-key-0123456789')})"}


async def test_live_feed_takes_a_bearer_token_in_its_first_message(server, api, metered):
    first, _, _ = metered
    await meters_indexed(server, first.address)
    challenge = (await api.post(f"{API}/auth/challenge", params={"meter": first.address})).json()
    body = {"meter": first.address, "nonce": challenge["nonce"], "signature": sign(first, challenge["typed_data"])}
    token = (await api.post(f"{API}/auth/token", json=body)).json()["token"]
    async with live(server, token=token) as ws:
        assert (await next_live(ws, "hello"))["meter"] == first.address


@pytest.mark.parametrize("query", ["key=anything", "token=v1.x.1.y", "page=1&key="])
async def test_live_feed_refuses_credentials_in_the_url_saying_where_they_go(server, op, query):
    async with connect(f"{live_url(server)}?{query.replace('anything', op['X-API-Key'])}") as ws:  # good ones too
        refusal = json.loads(await ws.recv())
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1008
    assert refusal["code"] == "credentials_in_url" and '{"type": "auth", "key": ...}' in refusal["message"]


async def test_live_feed_refuses_a_socket_that_sends_no_credentials_in_auth_timeout(server_settings, deployment):
    app = await ServerApp.start(server_settings.replace(auth_timeout=0.5), deployment)
    try:
        async with connect(live_url(app)) as ws:
            refusal = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == 1008
    finally:
        await app.stop()
    assert refusal["code"] == "unauthorized" and refusal["message"].startswith("no credentials in 0.5 s; send ")


@pytest.mark.parametrize("first", ["not json", '{"type": "auth"}', '{"type": "hello", "key": "k"}',
                                   '{"type": "auth", "key": 7}', '["auth"]'])
async def test_live_feed_refuses_a_first_message_that_is_not_credentials_without_repeating_it(server, first):
    async with connect(live_url(server)) as ws:
        await ws.send(first)
        refusal = json.loads(await ws.recv())
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1008
    assert refusal["code"] == "unauthorized" and refusal["message"].startswith("the first message must be ")
    assert first not in refusal["message"]


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


def bad_value(schema: dict) -> str | None:
    """A value a query parameter of this schema refuses, if there is one."""
    schema = next((s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"), schema)
    if schema.get("type") in ("integer", "boolean"):
        return "nope"
    if "pattern" in schema or "enum" in schema or "maxLength" in schema:
        return "x" * (schema.get("maxLength", 0) + 1) if "maxLength" in schema else "nope"
    return None


async def test_every_route_declares_exactly_the_errors_it_answers_in_the_error_shape(api, op, server, metered):
    """Walk the description: for each route, a bad key, another meter, a missing meter, every bad
    parameter and a flood of sign-ins, and compare what the server answers with what it declares."""
    first, second, _ = metered
    customer = {"X-API-Key": add_customer(server, first, "meter-a")}
    spec = (await api.get(f"{API}/openapi.json")).json()
    assert "HTTPValidationError" not in json.dumps(spec) and "ValidationError" not in spec["components"]["schemas"]
    error_shape = spec["components"]["schemas"]["ErrorOut"]
    assert error_shape["required"] == ["error"]
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) == {"code", "message"}
    schemes = spec["components"]["securitySchemes"]
    assert {(s["type"], s.get("in"), s.get("name"), s.get("scheme")) for s in schemes.values()} == {
        ("apiKey", "header", "X-API-Key", None), ("http", None, None, "bearer")}
    stranger = Account.create().address
    own_ref, other_ref = "0x" + "42" * 32, "0x" + "ab" * 32  # new_meter's account reference, and no account's
    unsecured = set()
    declared: dict[tuple[str, str], set[int]] = {}
    answered: dict[tuple[str, str], set[int]] = {}

    async def ask(method: str, path: str, who: dict[str, str] | None = None, **kwargs) -> httpx.Response:
        path = path.replace("{address}", first.address).replace("{ref}", own_ref).replace("{period}", "1")
        response = await api.request(method, path, headers=who, **kwargs)
        if response.status_code != 200:
            code = response.json()["error"]["code"]
            assert ERROR_CODES[code] == response.status_code and set(response.json()["error"]) == {"code", "message"}
        return response

    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            declared[method, path] = {int(status) for status in operation["responses"] if not status.startswith("2")}
            for status in declared[method, path]:
                content = operation["responses"][str(status)]["content"]["application/json"]["schema"]
                shape = "HealthOut" if path.endswith("/health") else "ErrorOut"  # /health's 503 is its report
                assert content == {"$ref": f"#/components/schemas/{shape}"}, (path, status)
            observed = []
            params = [p for p in operation.get("parameters", []) if p["in"] == "query"]
            body = {"json": {"hourly_limit_wh": None}} if path.endswith("/threshold") else {}
            if method == "post" and "{ref}" in path:
                body = {"json": {"up_to_id": 0} if path.endswith("/read") else {"body": "hello"}}
            if operation.get("security"):
                assert operation["security"] == [{name: []} for name in schemes], path
                observed.append(await ask(method, path, {"X-API-Key": "not-a-key"}, **body))
                if "{address}" in path:
                    observed.append(await ask(method, path.replace("{address}", second.address), customer, **body))
                    observed.append(await ask(method, path.replace("{address}", stranger), op, **body))
                    observed.append(await ask(method, path.replace("{address}", "0x1234"), op, **body))
                if "{ref}" in path:
                    observed.append(await ask(method, path.replace("{ref}", other_ref), customer, **body))
                    observed.append(await ask(method, path.replace("{ref}", other_ref), op, **body))
                    observed.append(await ask(method, path.replace("{ref}", "0x1234"), op, **body))
                if any(p["name"] == "meter" for p in params):
                    observed.append(await ask(method, path, customer, params={"meter": second.address}))
                if any(p["name"] == "account_ref" for p in params):
                    observed.append(await ask(method, path, customer, params={"account_ref": other_ref}))
                    observed.append(await ask(method, path, op, params={"account_ref": other_ref}))
                who = op
            else:
                unsecured.add(path)
                if path.endswith("/auth/challenge"):
                    observed.append(await ask(method, path, params={"meter": stranger}))
                if path.endswith("/auth/token"):
                    signed = {"meter": first.address, "nonce": "0x" + "11" * 32, "signature": "0x" + "22" * 65}
                    observed.append(await ask(method, path, json=signed))
                who = None
            for param in params:
                value = bad_value(param["schema"])
                if param["name"].startswith("period_"):
                    value = "yesterday"
                if value is not None:
                    observed.append(await ask(method, path, who, params={param["name"]: value}))
            if "requestBody" in operation:
                observed.append(await ask(method, path, who, json={}))
            answered[method, path] = {r.status_code for r in observed}
    # Last, as the two share each client's rate: a flood of sign-ins, answered 429 with Retry-After.
    for path in (f"{API}/auth/challenge", f"{API}/auth/token"):
        flood: list[httpx.Response] = []
        while len(flood) < 200 and (not flood or flood[-1].status_code != 429):  # a loaded machine refills the burst
            flood.append(await ask("post", path, params={"meter": first.address}, json={}))
        answered["post", path].add(flood[-1].status_code)
        assert "Retry-After" in spec["paths"][path]["post"]["responses"]["429"]["headers"]
        assert int(flood[-1].headers["Retry-After"]) >= 1
    # The 5xx answers, last as they break the server: an index whose copy of a period no longer adds up
    # to the chain's figures (its last reading's register changed under it) fails the statements with 500
    # statement_mismatch, and a stopped relay makes /health answer 503.
    server.http.app.state.ctx.index.db.execute("UPDATE readings SET register_wh = register_wh + 1000 WHERE seq = 36")
    for kind in ("pdf", "csv"):
        path = f"{API}/meters/{{address}}/bills/{{period}}/statement.{kind}"
        mismatch = await ask("get", path, op)
        assert error_of(mismatch) == (500, "statement_mismatch"), mismatch.text
        answered["get", path].add(mismatch.status_code)
    server.relay.stop()
    await server.tasks[0]
    report = await api.get(f"{API}/health")  # its 503 is its report (HealthOut), not the error shape
    assert (report.status_code, report.json()["status"]) == (503, "degraded")
    answered["get", f"{API}/health"].add(report.status_code)
    # But for a conversation's limits (409, 429), which tests/server/api/test_api_messages.py reaches, and an
    # opt-out's refusals for another meter and by the chain (403, 409), which need a signed body:
    # tests/server/api/test_api_demand_response.py reaches them.
    limits = {("post", f"{API}/accounts/{{ref}}/messages"): {409, 429},
              ("post", f"{API}/demand-response/events/{{event_id}}/opt-out"): {403, 409},
              ("post", f"{API}/demand-response/events/{{event_id}}/opt-out/withdrawal"): {403, 409}}
    assert answered == {key: statuses - limits.get(key, set()) for key, statuses in declared.items()}
    assert {s for statuses in declared.values() for s in statuses if s >= 500} == {500, 503}
    assert unsecured == {f"{API}/health", f"{API}/auth/challenge", f"{API}/auth/token"}


# ---------------------------------------------------------------- the documentation page


async def test_the_docs_page_and_everything_it_loads_are_served_by_this_server(api):
    page = await api.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "//" not in re.sub(r"<!--.*?-->", "", page.text)  # no URL of another host
    loads = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert len(loads) == 4  # stylesheet, icon, script and the OpenAPI description
    for url in loads:
        assert urlsplit(url).netloc == "" and url.startswith("/"), url
        asset = await api.get(url)
        assert asset.status_code == 200 and len(asset.content) > 500, url
    assert (await api.get("/api/docs/package.json")).status_code == 404  # only the page's own files


async def test_the_docs_page_shows_every_route_in_a_browser_that_reaches_nothing_else(api, server):
    operations = sum(len(methods) for methods in (await api.get(f"{API}/openapi.json")).json()["paths"].values())
    origin = server.settings.http_url
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            tab = await chromium.new_page()
            elsewhere: list[str] = []
            tab.on("request", lambda r: None if r.url.startswith(origin + "/") else elsewhere.append(r.url))
            await tab.goto(f"{origin}/api/docs")
            await expect(tab.locator(".opblock")).to_have_count(operations, timeout=UI_TIMEOUT_MS)
            await expect(tab.locator(".title")).to_contain_text("Smart-meter billing API")
            assert elsewhere == []
        finally:
            await chromium.close()
