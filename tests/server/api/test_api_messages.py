"""Messages between a customer and the operator through the REST API and the live feed, against a
running server on a real Ganache: who may read and write which conversation, paging, the limits
and their errors, unread counts, and messages arriving live."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest
from eth_account import Account

from common.settings import Settings
from tests.server.api.test_api import API, error_of, live, next_live, sign
from tests.server.api.test_api import api as api  # noqa: F401 - fixtures
from tests.server.api.test_api import op as op  # noqa: F401
from tests.server.conftest import meters_indexed

MAX_CHARS = 50
RATE = 5
CAP = 8


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    """Small limits, so that tests reach them quickly."""
    return server_settings.replace(message_max_chars=MAX_CHARS, message_rate_per_minute=RATE,
                                   message_max_per_account=CAP)


@pytest.fixture
async def accounts(server, billing):
    """Two customers, each with a meter of their own account (own reference, customer record, API key)."""
    made = []
    records = []
    for name, holder in (("meter-a", "Ada Lovelace"), ("meter-b", "Bea Brown")):
        meter = Account.create()
        ref = "0x" + secrets.token_hex(32)
        await asyncio.to_thread(billing.register_meter, meter.address, bytes.fromhex(ref[2:]), "north", 0,
                                int(time.time()) - 3_600)
        key = secrets.token_urlsafe(24)
        records.append({"meter": meter.address, "meter_name": name, "account_ref": ref, "name": holder,
                        "address": "1 Test Street", "email": "t@example.org", "api_key": key, "region": "north"})
        made.append({"meter": meter, "ref": ref, "key": {"X-API-Key": key}, "name": name, "holder": holder})
    path = server.settings.data_dir / "customers.json"
    path.write_text(json.dumps({"customers": records}))
    await meters_indexed(server, *(a["meter"].address for a in made))
    return made


def url(ref: str, tail: str = "") -> str:
    return f"{API}/accounts/{ref}/messages{tail}"


# ---------------------------------------------------------------- access


async def test_a_customer_writes_to_their_account_and_the_operator_reads_and_answers(api, op, accounts):
    ada = accounts[0]
    sent = await api.post(url(ada["ref"]), headers=ada["key"], json={"body": "  Why is my bill higher?\n"})
    assert sent.status_code == 201, sent.text
    message = sent.json()
    assert (message["author"], message["body"], message["account_ref"]) == ("customer", "Why is my bill higher?",
                                                                            ada["ref"])
    assert message["read_at"] is None and message["sent_at"].endswith("Z")

    seen = (await api.get(url(ada["ref"]), headers=op)).json()
    assert seen["count"] == 1 and seen["results"] == [message]
    answer = await api.post(url(ada["ref"]), headers=op, json={"body": "The tariff changed on the 1st."})
    assert answer.status_code == 201 and answer.json()["author"] == "operator"
    assert answer.json()["id"] > message["id"]
    mine = (await api.get(url(ada["ref"]), headers=ada["key"])).json()
    assert [(m["author"], m["body"]) for m in mine["results"]] == [
        ("operator", "The tariff changed on the 1st."), ("customer", "Why is my bill higher?")]


async def test_a_customer_can_neither_read_nor_write_another_account(api, op, accounts):
    ada, bea = accounts
    await api.post(url(bea["ref"]), headers=bea["key"], json={"body": "private to Bea"})
    for call in (api.get(url(bea["ref"]), headers=ada["key"]),
                 api.post(url(bea["ref"]), headers=ada["key"], json={"body": "hello Bea"}),
                 api.post(url(bea["ref"], "/read"), headers=ada["key"], json={"up_to_id": 10**9})):
        refused = await call
        assert error_of(refused) == (403, "forbidden")
        assert "own account" in refused.json()["error"]["message"]
    # An unknown account is not revealed to a customer either; the operator is told it does not exist.
    unknown = "0x" + secrets.token_hex(32)
    assert error_of(await api.get(url(unknown), headers=ada["key"])) == (403, "forbidden")
    assert error_of(await api.get(url(unknown), headers=op)) == (404, "not_found")
    assert error_of(await api.post(url(unknown), headers=op, json={"body": "anyone?"})) == (404, "not_found")
    assert error_of(await api.get(url("0x1234"), headers=op)) == (422, "invalid_request")
    assert error_of(await api.get(f"{API}/conversations", headers=op, params={"account_ref": "0x12"})) == (
        422, "invalid_request")
    assert error_of(await api.get(url(ada["ref"]))) == (401, "unauthorized")
    assert error_of(await api.post(url(ada["ref"]), json={"body": "who am I?"})) == (401, "unauthorized")
    # Nothing Ada tried reached Bea's conversation, which the operator sees whole.
    theirs = (await api.get(url(bea["ref"]), headers=op)).json()
    assert [m["body"] for m in theirs["results"]] == ["private to Bea"]
    assert (await api.get(url(bea["ref"]), headers=bea["key"])).json()["count"] == 1


async def test_a_bearer_token_from_the_meters_key_reaches_its_accounts_messages_only(api, accounts):
    ada, bea = accounts
    meter = ada["meter"]
    challenge = (await api.post(f"{API}/auth/challenge", params={"meter": meter.address})).json()
    issued = await api.post(f"{API}/auth/token", json={"meter": meter.address, "nonce": challenge["nonce"],
                                                       "signature": sign(meter, challenge["typed_data"])})
    token = {"Authorization": f"Bearer {issued.json()['token']}"}
    assert (await api.post(url(ada["ref"]), headers=token, json={"body": "signed in with my meter"})).status_code == 201
    assert (await api.get(url(ada["ref"]), headers=ada["key"])).json()["count"] == 1
    assert error_of(await api.get(url(bea["ref"]), headers=token)) == (403, "forbidden")


# ---------------------------------------------------------------- paging and limits


async def test_messages_page_newest_first_by_default_with_links(api, op, accounts):
    ada = accounts[0]
    for i in range(5):
        assert (await api.post(url(ada["ref"]), headers=ada["key"], json={"body": f"m{i}"})).status_code == 201
    first = (await api.get(url(ada["ref"]), headers=op, params={"page_size": 2})).json()
    assert first["count"] == 5 and first["previous"] is None and "page=2" in first["next"]
    assert [m["body"] for m in first["results"]] == ["m4", "m3"]
    last = (await api.get(first["next"].replace("page=2", "page=3"), headers=op)).json()
    assert [m["body"] for m in last["results"]] == ["m0"] and last["next"] is None and "page=2" in last["previous"]
    oldest = (await api.get(url(ada["ref"]), headers=op, params={"order_by": "sent_at", "page_size": 3})).json()
    assert [m["body"] for m in oldest["results"]] == ["m0", "m1", "m2"]
    assert error_of(await api.get(url(ada["ref"]), headers=op, params={"order_by": "id"})) == (422, "invalid_request")
    assert error_of(await api.get(url(ada["ref"]), headers=op, params={"page": 0})) == (422, "invalid_request")


@pytest.mark.parametrize(("body", "says"), [
    ("x" * (MAX_CHARS + 1), f"body: a message may have at most {MAX_CHARS} characters; this one has {MAX_CHARS + 1}"),
    (" \n\t ", "body: a message cannot be empty"),
    ("ring\x07the bell", "body: control character U+0007 at position 4 is not allowed"),
    ("escape \x1b[2J", "body: control character U+001B at position 7"),
    (12345, "body: Input should be a valid string"),
    (None, "body: Input should be a valid string"),
])
async def test_a_body_too_long_empty_or_with_control_characters_is_refused_naming_the_field(
        api, op, accounts, body, says):
    ada = accounts[0]
    refused = await api.post(url(ada["ref"]), headers=ada["key"], json={"body": body})
    assert error_of(refused) == (422, "invalid_request")
    assert refused.json()["error"]["message"].startswith(says)
    assert (await api.get(url(ada["ref"]), headers=op)).json()["count"] == 0


async def test_a_missing_body_and_a_bad_read_mark_are_refused_naming_the_field(api, accounts):
    ada = accounts[0]
    missing = await api.post(url(ada["ref"]), headers=ada["key"], json={"text": "hello"})
    assert error_of(missing) == (422, "invalid_request")
    assert missing.json()["error"]["message"] == "body: Field required"
    for wrong in (-1, 2**64, "all"):
        refused = await api.post(url(ada["ref"], "/read"), headers=ada["key"], json={"up_to_id": wrong})
        assert error_of(refused) == (422, "invalid_request")
        assert refused.json()["error"]["message"].startswith("up_to_id:")
    # Exactly the limit, once trimmed, is accepted.
    exact = await api.post(url(ada["ref"]), headers=ada["key"], json={"body": "  " + "y" * MAX_CHARS + "\n"})
    assert exact.status_code == 201 and exact.json()["body"] == "y" * MAX_CHARS


async def test_sending_too_fast_is_refused_with_429_and_when_to_retry(api, op, accounts):
    ada, bea = accounts
    for i in range(RATE):
        assert (await api.post(url(ada["ref"]), headers=ada["key"], json={"body": f"m{i}"})).status_code == 201
    refused = await api.post(url(ada["ref"]), headers=ada["key"], json={"body": "one too many"})
    assert error_of(refused) == (429, "too_many_messages")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert f"at most {RATE} messages a minute" in refused.json()["error"]["message"]
    # The operator's answers, and other accounts, count on their own.
    assert (await api.post(url(ada["ref"]), headers=op, json={"body": "slow down, I am here"})).status_code == 201
    assert (await api.post(url(bea["ref"]), headers=bea["key"], json={"body": "me too"})).status_code == 201
    assert (await api.get(url(ada["ref"]), headers=op)).json()["count"] == RATE + 1


async def test_a_full_conversation_refuses_more_messages_and_keeps_the_old_ones(api, op, accounts):
    ada = accounts[0]
    for i in range(RATE):
        assert (await api.post(url(ada["ref"]), headers=ada["key"], json={"body": f"c{i}"})).status_code == 201
    for i in range(CAP - RATE):
        assert (await api.post(url(ada["ref"]), headers=op, json={"body": f"o{i}"})).status_code == 201
    full = await api.post(url(ada["ref"]), headers=op, json={"body": "no room"})
    assert error_of(full) == (409, "conversation_full")
    kept = (await api.get(url(ada["ref"]), headers=op, params={"order_by": "sent_at"})).json()
    assert kept["count"] == CAP and kept["results"][0]["body"] == "c0"


# ---------------------------------------------------------------- unread counts and the conversation list


async def unread(api, headers) -> tuple[int, dict[str, int]]:
    """The caller's unread total and each listed conversation's unread count."""
    page = (await api.get(f"{API}/conversations", headers=headers, params={"with_messages": "true"})).json()
    return page["unread"], {c["account_ref"]: c["unread"] for c in page["results"]}


async def test_unread_counts_move_with_sends_and_read_marks_but_not_with_reading(api, op, accounts):
    ada, bea = accounts
    first = (await api.post(url(ada["ref"]), headers=ada["key"], json={"body": "one"})).json()
    await api.post(url(ada["ref"]), headers=ada["key"], json={"body": "two"})
    await api.post(url(bea["ref"]), headers=bea["key"], json={"body": "from Bea"})
    assert await unread(api, op) == (3, {ada["ref"]: 2, bea["ref"]: 1})
    assert await unread(api, ada["key"]) == (0, {ada["ref"]: 0})  # their own messages are not unread to them

    await api.get(url(ada["ref"]), headers=op)  # reading marks nothing
    assert (await unread(api, op))[0] == 3

    marked = await api.post(url(ada["ref"], "/read"), headers=op, json={"up_to_id": first["id"]})
    assert marked.json() == {"account_ref": ada["ref"], "reader": "operator", "up_to_id": first["id"], "marked": 1,
                             "unread": 1}
    assert await unread(api, op) == (2, {ada["ref"]: 1, bea["ref"]: 1})
    shown = (await api.get(url(ada["ref"]), headers=ada["key"], params={"order_by": "sent_at"})).json()["results"]
    assert shown[0]["read_at"] is not None and shown[1]["read_at"] is None  # the customer sees what was read

    await api.post(url(ada["ref"]), headers=op, json={"body": "answered"})
    assert await unread(api, ada["key"]) == (1, {ada["ref"]: 1})
    await api.post(url(ada["ref"], "/read"), headers=ada["key"], json={"up_to_id": 10**12})
    assert await unread(api, ada["key"]) == (0, {ada["ref"]: 0})
    assert (await unread(api, op))[0] == 2  # the customer's read mark touches only the operator's messages


async def test_the_operator_lists_every_accounts_conversation_newest_activity_first(api, op, accounts):
    ada, bea = accounts
    await api.post(url(ada["ref"]), headers=ada["key"], json={"body": "Ada first"})
    await api.post(url(bea["ref"]), headers=bea["key"], json={"body": "Bea second"})
    page = (await api.get(f"{API}/conversations", headers=op, params={"with_messages": "true"})).json()
    assert [c["account_ref"] for c in page["results"]] == [bea["ref"], ada["ref"]] and page["count"] == 2
    newest = page["results"][0]
    assert newest["meters"] == [{"address": bea["meter"].address, "name": "meter-b"}]
    assert (newest["customer_name"], newest["messages"], newest["unread"]) == ("Bea Brown", 1, 1)
    assert newest["last_message"]["body"] == "Bea second"

    await api.post(url(ada["ref"]), headers=op, json={"body": "An answer for Ada"})
    page = (await api.get(f"{API}/conversations", headers=op, params={"with_messages": "true"})).json()
    assert [c["account_ref"] for c in page["results"]] == [ada["ref"], bea["ref"]]
    assert page["results"][0]["last_message"]["author"] == "operator"

    # Without the filter every registered account is listed, those with messages first.
    everything = (await api.get(f"{API}/conversations", headers=op, params={"page_size": 2})).json()
    assert everything["count"] > 2 and "page=2" in everything["next"]
    assert [c["account_ref"] for c in everything["results"]] == [ada["ref"], bea["ref"]]
    rest = (await api.get(everything["next"], headers=op)).json()["results"]
    assert rest and all(c["messages"] == 0 and c["last_message"] is None for c in rest)

    # One account's conversation alone, for whoever may see it.
    one = (await api.get(f"{API}/conversations", headers=op, params={"account_ref": ada["ref"]})).json()
    assert [c["account_ref"] for c in one["results"]] == [ada["ref"]] and one["unread"] == 1
    assert error_of(await api.get(f"{API}/conversations", headers=bea["key"], params={"account_ref": ada["ref"]})) == (
        403, "forbidden")

    # A customer's list is their own account alone.
    mine = (await api.get(f"{API}/conversations", headers=bea["key"])).json()
    assert [c["account_ref"] for c in mine["results"]] == [bea["ref"]] and mine["count"] == 1
    assert mine["results"][0]["customer_name"] == "Bea Brown"


# ---------------------------------------------------------------- live


async def test_a_message_goes_live_to_its_accounts_dashboard_and_the_operators_only(server, api, op, accounts):
    ada, bea = accounts
    async with (live(server, key=op["X-API-Key"]) as operator,
                live(server, key=ada["key"]["X-API-Key"]) as ada_page,
                live(server, key=bea["key"]["X-API-Key"]) as bea_page):
        for ws in (operator, ada_page, bea_page):
            await next_live(ws, "hello")
        sent = (await api.post(url(ada["ref"]), headers=ada["key"], json={"body": "live, please"})).json()
        assert (await next_live(operator, "message"))["message"] == sent
        assert (await next_live(ada_page, "message"))["message"] == sent

        answer = (await api.post(url(ada["ref"]), headers=op, json={"body": "live answer"})).json()
        assert (await next_live(ada_page, "message"))["message"] == answer
        assert (await next_live(operator, "message"))["message"] == answer

        await api.post(url(ada["ref"], "/read"), headers=op, json={"up_to_id": answer["id"]})
        read = await next_live(ada_page, "messages_read")
        assert (read["account_ref"], read["reader"], read["up_to_id"]) == (ada["ref"], "operator", answer["id"])

        # Bea's page heard nothing of Ada's conversation: the first message it gets is her own.
        own = (await api.post(url(bea["ref"]), headers=bea["key"], json={"body": "Bea's own"})).json()
        first = json.loads(await asyncio.wait_for(bea_page.recv(), 20))
        assert first == {"type": "message", "message": own}


# ---------------------------------------------------------------- description


async def test_openapi_declares_the_message_routes_and_their_errors(api):
    spec = (await api.get(f"{API}/openapi.json")).json()
    paths = spec["paths"]
    assert {f"{API}/conversations", f"{API}/accounts/{{ref}}/messages", f"{API}/accounts/{{ref}}/messages/read"} <= set(
        paths)
    send = paths[f"{API}/accounts/{{ref}}/messages"]["post"]
    assert {"201", "401", "403", "404", "409", "422", "429"} <= set(send["responses"])
    assert "Retry-After" in send["responses"]["429"]["headers"]
    assert send["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    listed = paths[f"{API}/accounts/{{ref}}/messages"]["get"]
    assert {"page", "page_size", "order_by"} <= {p["name"] for p in listed["parameters"]}
