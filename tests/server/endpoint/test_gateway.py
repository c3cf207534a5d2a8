"""The gateway over real TLS against a real Ganache: login, readings, bills, rejections."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import time

import pytest
from eth_account import Account
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from common import errors
from common.eip712 import ReadingData, sign_login
from common.logs import UNTRUSTED_LIMIT, parse_line, setup_logging
from common.messages import SUBPROTOCOL, Ack, Auth, Bill, ErrorMessage, Reading, encode
from common.tariff import RejectReason
from common.tls import client_context
from meters.link import signed_reading


async def next_of(link, kind, timeout=20.0):
    """The next message of a type, skipping others (e.g. grid alerts)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await link.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(msg, kind):
            return msg


async def test_meter_logs_in_and_gets_its_state(server, new_meter, link_for, billing):
    meter = new_meter(region="south")
    link = link_for(meter)
    welcome = await link.connect()
    assert welcome.meter.lower() == meter.address.lower()
    assert welcome.region == "south"
    assert welcome.last_seq == 0
    assert welcome.last_energy_wh == 10_000
    assert welcome.bill.amount_due == billing.bill(meter.address).amount_due
    assert welcome.tariff.unit_rate == billing.tariff().unit_rate
    # The connection's rate limit, so that a meter resending a backlog paces itself to it.
    assert welcome.rate_limit is not None
    assert (welcome.rate_limit.per_second, welcome.rate_limit.burst) == (5.0, 20)
    await link.close()


async def test_reading_round_trips_to_a_bill_equal_to_the_chain(server, new_meter, link_for, billing):
    meter = new_meter()
    link = link_for(meter)
    welcome = await link.connect()
    now = int(time.time())
    await link.send_reading(ReadingData(meter.address, 1, now - 10, welcome.last_energy_wh + 400))
    ack = await next_of(link, Ack)
    assert (ack.seq, ack.status) == (1, "queued")
    bill = await next_of(link, Bill)
    assert bill.seq == 1 and bill.energy_wh == welcome.last_energy_wh + 400
    on_chain = billing.bill(meter.address)
    assert bill.amount_due == on_chain.amount_due and bill.period_energy_wh == on_chain.period_energy_wh == 400
    assert billing.meter(meter.address).last_seq == 1
    await link.close()


async def test_resent_reading_is_acknowledged_as_duplicate_and_recorded_once(server, new_meter, link_for, billing):
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    data = ReadingData(meter.address, 1, int(time.time()) - 5, 10_100)
    msg = signed_reading(meter.key, link.domain, data)
    server.batcher.stop()  # keep it queued so the resend finds it there
    await server.tasks[1]
    await link.send(msg)
    await link.send(msg)
    acks = [await next_of(link, Ack), await next_of(link, Ack)]
    assert [(a.seq, a.status) for a in acks] == [(1, "queued"), (1, "duplicate")]
    assert server.store.count() == 1
    await link.close()


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda d, m: {"data": ReadingData(m.address, 1, d.timestamp, d.energy_wh), "key": Account.create().key},
         "bad_signature"),
        (lambda d, m: {"data": ReadingData(m.address, 0, d.timestamp, d.energy_wh)}, "stale_sequence"),
        (lambda d, m: {"data": ReadingData(m.address, 3, d.timestamp, d.energy_wh)}, "sequence_gap"),
        (lambda d, m: {"data": ReadingData(m.address, 1, int(time.time()) - 2 * 86_400, d.energy_wh)},
         "stale_timestamp"),
        (lambda d, m: {"data": ReadingData(m.address, 1, int(time.time()) + 3_600, d.energy_wh)}, "future_timestamp"),
        (lambda d, m: {"data": ReadingData(m.address, 1, d.timestamp, 9_000)}, "register_decreased"),
        (lambda d, m: {"data": ReadingData(m.address, 1, d.timestamp, 10_000 + 1_000_000)}, "implausible_delta"),
        (lambda d, m: {"data": ReadingData(m.address, 2**32, d.timestamp, d.energy_wh)}, "out_of_range"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_bad_reading_gets_its_error_code_and_one_refused_for_its_content_is_refused_on_chain_too(
    server, new_meter, link_for, billing, mutate, code
):
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    good = ReadingData(meter.address, 1, int(time.time()) - 60, 10_050)
    change = mutate(good, meter)
    msg = signed_reading(change.get("key", meter.key), link.domain, change["data"])
    await link.send(msg)
    err = await next_of(link, ErrorMessage)
    assert err.code == code and err.seq == change["data"].seq
    # A reading refused for its content used up its sequence number, and goes to the chain all the same, which
    # records the refusal (it takes a meter's readings in an unbroken sequence); one refused for its number or its
    # signature did not, and never reaches the chain.
    content = code in ("stale_timestamp", "future_timestamp", "register_decreased", "implausible_delta")
    next_seq = 2 if content else 1
    await link.send_reading(ReadingData(meter.address, next_seq, good.timestamp, good.energy_wh))
    assert (await next_of(link, Ack)).seq == next_seq
    assert (await next_of(link, Bill, timeout=30)).seq == next_seq
    refusals = billing.contract.events.ReadingRejected().get_logs(from_block=billing.deployment.block,
                                                                  argument_filters={"meter": meter.address})
    assert [(e.args.seq, RejectReason(e.args.reason).name.lower()) for e in refusals] == \
        ([(1, code)] if content else [])
    assert billing.meter(meter.address).last_seq == next_seq
    await link.close()


async def test_reading_naming_another_meter_is_refused(server, new_meter, link_for):
    meter, other = new_meter(), new_meter()
    link = link_for(meter)
    await link.connect()
    await link.send(signed_reading(other.key, link.domain, ReadingData(other.address, 1, int(time.time()) - 5, 10_010)))
    assert (await next_of(link, ErrorMessage)).code == "wrong_meter"
    await link.close()


@pytest.mark.parametrize(
    "frame, code",
    [
        ("{not json", "malformed_message"),
        ('{"type": "reading", "seq": 1}', "malformed_message"),
        ('{"type": "reading", "meter": "0x' + "1" * 40 + '", "seq": "1", "timestamp": 1, "energyWh": 1, '
         '"signature": "0x' + "2" * 130 + '"}', "malformed_message"),
        ('{"type": "teleport"}', "malformed_message"),
        ('{"type": "ack", "seq": 1}', "unexpected_message"),
        (b"\x00\x01binary", "unsupported_frame"),
        ("x" * 5000, "message_too_large"),
        ('{"type": "reading", "meter": "0x' + "1" * 40 + '", "seq": 1, "timestamp": 1, "energy_wh": 1, '
         '"signature": "0x' + "2" * 130 + '"}', "malformed_message"),
        ('{"type": "reading", "meter": "0x' + "1" * 40 + '", "seq": 1, "seq": 2, "timestamp": 1, "energyWh": 1, '
         '"signature": "0x' + "2" * 130 + '"}', "malformed_message"),
    ],
    ids=["not-json", "missing-fields", "wrong-type", "unknown-type", "server-message", "binary", "too-large",
         "snake-case-name", "duplicate-key"],
)
async def test_malformed_frames_get_clear_codes(server, new_meter, link_for, frame, code):
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    await link.ws.send(frame)
    assert (await next_of(link, ErrorMessage)).code == code
    await link.close()


async def _raw_login(settings, deployment, account, *, nonce_override=None, sign_key=None, delay=0.0):
    ws = await connect(settings.server_url, ssl=client_context(settings.ca_cert_path))
    challenge = json.loads(await ws.recv())
    nonce_hex = nonce_override or challenge["nonce"]
    if delay:
        import asyncio

        await asyncio.sleep(delay)
    sig = sign_login(sign_key or account.key, deployment.domain, bytes.fromhex(nonce_hex[2:]))
    await ws.send(encode(Auth(meter=account.address, nonce=nonce_hex, signature=sig)))
    reply = json.loads(await ws.recv())
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    return reply, closed.value.rcvd.code if closed.value.rcvd else None


async def test_login_failures_get_an_error_and_a_policy_close(server, server_settings, deployment, new_meter):
    meter = new_meter()
    cases = {
        "challenge_mismatch": dict(nonce_override="0x" + "ab" * 32),
        "bad_login_signature": dict(sign_key=Account.create().key),
    }
    for code, kwargs in cases.items():
        reply, close_code = await _raw_login(server_settings, deployment, meter, **kwargs)
        assert (reply["type"], reply["code"], close_code) == ("error", code, 1008)
    unknown = Account.create()
    reply, close_code = await _raw_login(server_settings, deployment, unknown)
    assert (reply["code"], close_code) == ("unknown_meter", 1008)
    inactive = new_meter(active=False)
    reply, close_code = await _raw_login(server_settings, deployment, inactive)
    assert (reply["code"], close_code) == ("meter_inactive", 1008)


async def test_expired_challenge_is_refused(server_settings, deployment, new_meter):
    from server.app import ServerApp

    settings = server_settings.replace(challenge_ttl=0.2)
    app = await ServerApp.start(settings, deployment)
    try:
        reply, close_code = await _raw_login(settings, deployment, new_meter(), delay=0.5)
        assert (reply["code"], close_code) == ("challenge_expired", 1008)
    finally:
        await app.stop()


async def test_reading_before_login_is_refused(server, server_settings, deployment, new_meter):
    meter = new_meter()
    ws = await connect(server_settings.server_url, ssl=client_context(server_settings.ca_cert_path))
    await ws.recv()  # challenge
    msg = signed_reading(meter.key, deployment.domain, ReadingData(meter.address, 1, int(time.time()) - 5, 10_010))
    await ws.send(encode(msg))
    reply = json.loads(await ws.recv())
    assert (reply["code"], reply["seq"]) == ("not_authenticated", 1)
    with pytest.raises(ConnectionClosed):
        await ws.recv()


async def test_second_auth_on_an_open_connection_is_unexpected(server, new_meter, link_for):
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    await link.send(Auth(meter=meter.address, nonce="0x" + "00" * 32, signature="0x" + "11" * 65))
    assert (await next_of(link, ErrorMessage)).code == "unexpected_message"
    await link.close()


async def test_server_certificate_is_verified_against_the_generated_ca(server, server_settings, tmp_path):
    import ssl

    from server.endpoint.tls import ensure_tls

    other = ensure_tls(tmp_path / "other-ca")
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(server_settings.server_url, ssl=client_context(other.ca_cert))


async def test_login_error_is_raised_by_the_meter_link(server, link_for):
    with pytest.raises(errors.UnknownMeter):
        await link_for(Account.create()).connect()


async def test_reading_message_is_validated_before_the_queue(server, new_meter, link_for):
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    bad = Reading(meter=meter.address, seq=1, timestamp=int(time.time()), energy_wh=10_010, export_wh=0,
                  signature="0x" + "00" * 65)
    await link.send(bad)
    assert (await next_of(link, ErrorMessage)).code == "bad_signature"
    await link.close()


async def test_a_mined_batch_is_confirmed_by_the_relay_without_fetching_its_receipt(server, new_meter, link_for):
    server.batcher.confirm_wait = 30.0  # only a report that never comes, not a slow machine, means a receipt
    meter = new_meter()
    link = link_for(meter)
    welcome = await link.connect()
    now = int(time.time())
    for seq in (1, 2, 3):
        energy = welcome.last_energy_wh + 50 * seq
        await link.send_reading(ReadingData(meter.address, seq, now - 240 + 60 * seq, energy))
        assert (await next_of(link, Bill)).seq == seq
    deadline = time.monotonic() + 10
    while server.store.count() or server.batcher.batches < 3:  # the batcher hears of the block just after
        assert time.monotonic() < deadline, "the batcher never took the mined batches off its queue"
        await asyncio.sleep(0.05)
    assert server.batcher.receipts_fetched == 0
    await link.close()


async def test_readings_the_store_failed_to_keep_are_not_acknowledged_and_are_taken_again(server, new_meter, link_for,
                                                                                          monkeypatch):
    meter = new_meter()
    link = link_for(meter)
    welcome = await link.connect()
    data = ReadingData(meter.address, 1, int(time.time()) - 60, welcome.last_energy_wh + 50)

    def disk_fails(readings, cursors):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(server.store, "put", disk_fails)
    await link.send_reading(data)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            assert not isinstance(await link.recv(timeout=10), Ack)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    monkeypatch.undo()
    link = link_for(meter)
    await link.connect()
    await link.send_reading(data)  # the cursor went back: the same reading is taken, not called stale
    ack = await next_of(link, Ack)
    assert (ack.seq, ack.status) == (1, "queued")
    assert (await next_of(link, Bill)).seq == 1
    await link.close()


async def test_welcome_says_the_last_seq_used_up_by_a_reading_refused_for_its_content(server, new_meter, link_for):
    meter = new_meter()
    link = link_for(meter)
    welcome = await link.connect()
    assert link.ws.subprotocol == SUBPROTOCOL
    assert (welcome.last_seq, welcome.last_used_seq) == (0, 0)
    future = int(time.time()) + 3_600
    await link.send_reading(ReadingData(meter.address, 1, future, welcome.last_energy_wh + 10))
    assert (await next_of(link, ErrorMessage)).code == "future_timestamp"
    await link.close()
    link = link_for(meter)
    welcome = await link.connect()
    assert welcome.last_used_seq == 1 and welcome.last_seq in (0, 1)  # refused, yet used up (on chain too, soon)
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 5, welcome.last_energy_wh + 10))
    err = await next_of(link, ErrorMessage)
    if err.code == "future_timestamp":  # the chain's own refusal of the first seq 1, told once final
        assert err.seq == 1
        err = await next_of(link, ErrorMessage)
    assert (err.code, err.seq) == ("stale_sequence", 1)
    assert "last accepted" not in err.message
    assert "the last seq used is 1" in err.message and "refused for its content" in err.message
    assert "the next free seq is 2" in err.message
    await link.send_reading(ReadingData(meter.address, 2, int(time.time()) - 5, welcome.last_energy_wh + 10))
    assert (await next_of(link, Ack)).seq == 2
    await link.close()


async def test_a_meter_that_does_not_offer_version_2_gets_the_version_1_welcome(server, server_settings, deployment,
                                                                               new_meter):
    meter = new_meter()
    ws = await connect(server_settings.server_url, ssl=client_context(server_settings.ca_cert_path))
    assert ws.subprotocol is None
    challenge = json.loads(await ws.recv())
    sig = sign_login(meter.key, deployment.domain, bytes.fromhex(challenge["nonce"][2:]))
    await ws.send(encode(Auth(meter=meter.address, nonce=challenge["nonce"], signature=sig)))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome" and welcome["lastSeq"] == 0
    assert "lastUsedSeq" not in welcome  # a version 1 meter refuses fields it does not know
    assert "rateLimit" not in welcome
    await ws.close()


@pytest.fixture
def server_log():
    """The root logger's structured lines, as the server writes them to its log, in a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    setup_logging("INFO", stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("breaker", ["\r", "\n", "\u2028", "\x1b", "\x00", "\x85"], ids=ascii)
async def test_a_hostile_message_type_cannot_forge_log_lines_nor_be_echoed_unbounded(server, new_meter, link_for,
                                                                                     server_log, breaker):
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    forged = f"{breaker}ts=2026-01-01T00:00:00.000Z level=error logger=gateway event=chain_lost{breaker}"
    await link.ws.send(json.dumps({"type": forged + "x" * 3_000}))
    err = await next_of(link, ErrorMessage)
    assert err.code == "malformed_message"
    assert err.message.isprintable() and len(err.message) <= UNTRUSTED_LIMIT + 30
    await link.close()
    lines = server_log.getvalue().splitlines()
    assert all(line.startswith("ts=") for line in lines), lines
    refused = [parse_line(line) for line in lines if "event=message_refused" in line]
    assert len(refused) == 1
    assert refused[0]["detail"] == err.message
