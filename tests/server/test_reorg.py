"""Finality and reorganisations against a real Anvil mining a block a second, with CONFIRMATIONS=2:
bills are provisional until their block is final, the gateway keeps a reading queued until then,
and a reorganisation that removes a batch has its reading submitted again and recorded once."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from common.billing import Billing
from common.chain import AsyncChainClient, ChainClient
from common.devchain import AnvilProcess, free_port
from common.eip712 import ReadingData, sign_login, sign_reading
from common.events import unpack_record
from common.messages import Ack, Auth, Bill, encode
from common.settings import Settings
from common.tls import client_context
from meters.link import MeterLink, signed_reading
from server.app import ServerApp
from server.writer.batcher import Batcher
from server.writer.store import Store
from tests.server.endpoint.test_gateway import next_of
from tests.server.indexing.test_index_rollback import rows

pytestmark = pytest.mark.slow


@pytest.fixture
def reorg_settings(anvil_settings: Settings, tmp_path) -> Settings:
    return anvil_settings.replace(data_dir=tmp_path / "data", server_port=free_port(), http_port=0,
                                  batch_max_wait=0.05)


@pytest.fixture
def anvil_billing(anvil_settings: Settings, anvil_deployment) -> Billing:
    return Billing(ChainClient(anvil_settings), anvil_deployment)


@pytest.fixture
async def anvil_server(reorg_settings: Settings, anvil_deployment) -> AsyncIterator[ServerApp]:
    app = await ServerApp.start(reorg_settings, anvil_deployment)
    await asyncio.wait_for(app.relay.caught_up.wait(), timeout=30)
    yield app
    await app.stop()


@pytest.fixture
def anvil_meter(anvil_billing: Billing) -> Callable[[], LocalAccount]:
    def make() -> LocalAccount:
        account = Account.create()
        anvil_billing.register_meter(account.address, b"\x42" * 32, "north", 10_000, int(time.time()) - 86_400)
        return account

    return make


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def recorded(billing: Billing, meter: str) -> list[int]:
    events = billing.contract.events.ReadingRecorded().get_logs(from_block=billing.deployment.block,
                                                                argument_filters={"meter": meter})
    return [unpack_record(int(e.args.record))["seq"] for e in events]


async def test_a_bill_is_provisional_until_its_block_is_final_and_the_reading_stays_queued_till_then(
        anvil_server, anvil_meter, reorg_settings, anvil_deployment, anvil):
    meter = anvil_meter()
    link = MeterLink(reorg_settings.server_url, client_context(reorg_settings.ca_cert_path), meter.key,
                     anvil_deployment.domain)
    await link.connect()
    assert link.version >= 3
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 30, 10_100))
    await next_of(link, Ack)
    provisional = await next_of(link, Bill, timeout=30)
    assert provisional.seq == 1 and provisional.final is False
    assert anvil_server.store.count() == 1  # mined, not final: still queued
    assert not anvil_server.index.is_final(provisional.block) or anvil_server.index.final is None
    final = await next_of(link, Bill, timeout=30)
    assert final.seq == 1 and final.final is True and final.block == provisional.block
    head = int(anvil.rpc("eth_blockNumber"), 16)  # type: ignore[arg-type]
    assert head - final.block >= reorg_settings.finality_depth
    await until(lambda: anvil_server.store.count() == 0, 10, "the final reading to leave the queue")
    await until(lambda: anvil_server.index.is_final(anvil_server.index.meter(meter.address).last_block), 10,
                "the index to count the bill final")
    await link.close()


async def test_a_meter_of_version_2_gets_only_the_final_bill_without_the_new_field(
        anvil_server, anvil_meter, reorg_settings, anvil_deployment, anvil):
    meter = anvil_meter()
    ws = await connect(reorg_settings.server_url, ssl=client_context(reorg_settings.ca_cert_path),
                       subprotocols=[Subprotocol("smartmeter.v2")])
    assert ws.subprotocol == "smartmeter.v2"
    challenge = json.loads(await ws.recv())
    sig = sign_login(meter.key, anvil_deployment.domain, bytes.fromhex(challenge["nonce"][2:]))
    await ws.send(encode(Auth(meter=meter.address, nonce=challenge["nonce"], signature=sig)))
    assert json.loads(await ws.recv())["type"] == "welcome"
    data = ReadingData(meter.address, 1, int(time.time()) - 30, 10_100)
    await ws.send(encode(signed_reading(meter.key, anvil_deployment.domain, data)))
    bills = []
    deadline = time.monotonic() + 30
    while not bills:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic())))
        if message["type"] == "bill":
            bills.append(message)
            head = int(anvil.rpc("eth_blockNumber"), 16)  # type: ignore[arg-type]
            assert head - message["block"] >= reorg_settings.finality_depth, "a provisional bill reached version 2"
    assert "final" not in bills[0]
    await ws.close()


async def test_a_reorganisation_that_removes_a_batch_has_its_reading_submitted_again_and_recorded_once(
        anvil_server, anvil_meter, anvil_billing, reorg_settings, anvil_deployment, anvil: AnvilProcess):
    meter = anvil_meter()
    link = MeterLink(reorg_settings.server_url, client_context(reorg_settings.ca_cert_path), meter.key,
                     anvil_deployment.domain)
    await link.connect()
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 30, 10_100))
    await next_of(link, Ack)
    provisional = await next_of(link, Bill, timeout=30)
    assert provisional.final is False
    head = int(anvil.rpc("eth_blockNumber"), 16)  # type: ignore[arg-type]
    provisional_block_hash = anvil.rpc("eth_getBlockByNumber", [hex(provisional.block), False])["hash"]  # type: ignore[index]
    depth = head - provisional.block + 1
    assert depth <= reorg_settings.finality_depth, "the block turned final before the test could replace it"
    anvil.rpc("anvil_reorg", [depth, []])  # the batch's block is replaced by an empty one: its transaction is gone
    assert anvil.rpc("eth_getTransactionByHash", [provisional.tx_hash]) is None
    # The gateway still holds the reading: it submits it again, and the final bill comes from the new chain.
    while True:
        bill = await next_of(link, Bill, timeout=60)
        if bill.final:
            break
    # Submitted again from the gateway's queue (the same batch with the same nonce may make the very same
    # transaction): mined in a block of the new chain.
    receipt = anvil.rpc("eth_getTransactionReceipt", [bill.tx_hash])
    assert bill.seq == 1 and receipt is not None and int(receipt["blockNumber"], 16) == bill.block  # type: ignore[index]
    assert anvil.rpc("eth_getBlockByNumber", [hex(provisional.block), False])["hash"] != \
        provisional_block_hash  # type: ignore[index]
    assert recorded(anvil_billing, meter.address) == [1], "the reading was lost or recorded twice"
    assert anvil_server.relay.reorganisations >= 1 and anvil_server.batcher.rollbacks >= 1
    await until(lambda: anvil_server.store.count() == 0, 10, "the queue to empty")
    # The index undid the vanished block and read the new one: the same as rebuilt from the chain.
    await until(lambda: (anvil_server.index.meter(meter.address) or None) is not None
                and anvil_server.index.meter(meter.address).last_seq == 1, 10, "the index to catch up")
    count, found = anvil_server.index.readings(meter.address, 0, 2**32, False, 10, 0)
    assert count == 1 and found[0]["tx_hash"] == bill.tx_hash and found[0]["block"] == bill.block
    await link.close()


async def test_the_index_after_reorganisations_equals_one_rebuilt_from_the_chain(
        anvil_server, anvil_meter, reorg_settings, anvil_deployment, anvil, tmp_path):
    from server.app import open_index
    from server.indexing.indexer import rebuild

    meter = anvil_meter()
    link = MeterLink(reorg_settings.server_url, client_context(reorg_settings.ca_cert_path), meter.key,
                     anvil_deployment.domain)
    await link.connect()
    now = int(time.time())
    for seq in (1, 2, 3):
        await link.send_reading(ReadingData(meter.address, seq, now - 300 + seq * 60, 10_000 + seq * 100))
        await next_of(link, Ack)
        provisional = await next_of(link, Bill, timeout=30)
        head = int(anvil.rpc("eth_blockNumber"), 16)  # type: ignore[arg-type]
        anvil.rpc("anvil_reorg", [min(head - provisional.block + 1, 2), []])
    while True:
        bill = await next_of(link, Bill, timeout=60)
        if bill.final and bill.seq == 3:
            break
    await until(lambda: anvil_server.store.count() == 0, 15, "the queue to empty")
    head = int(anvil.rpc("eth_blockNumber"), 16)  # type: ignore[arg-type]
    await until(lambda: (anvil_server.index.position() or (0, 0))[0] >= bill.block
                and (anvil_server.index.final or 0) >= bill.block, 15, "the index to reach the last bill")
    copy = open_index(reorg_settings.replace(data_dir=tmp_path / "copy"), anvil_deployment)
    await rebuild(reorg_settings, anvil_deployment, copy)
    live, rebuilt = rows(anvil_server.index), rows(copy)
    mine = meter.address.lower()
    for table in ("readings", "hourly", "periods", "meters", "consumption_alerts", "rejections"):
        assert [r for r in live[table] if str(r[0]).lower() == mine] == \
            [r for r in rebuilt[table] if str(r[0]).lower() == mine], table
    assert anvil_server.index.meter(meter.address).last_seq == 3
    copy.close()
    await link.close()
    assert head > 0


def gateway_pending(anvil: AnvilProcess, gateway: str) -> list[str]:
    """Hashes of the gateway's transactions waiting in the node's pool."""
    pool: Any = anvil.rpc("txpool_content")
    mine = {k.lower(): v for k, v in (pool.get("pending") or {}).items()}.get(gateway.lower()) or {}
    return [tx["hash"] for tx in mine.values()]


async def until_pending(anvil: AnvilProcess, gateway: str, timeout: float, skip: tuple[str, ...] = ()) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = [h for h in gateway_pending(anvil, gateway) if h not in skip]
        if found:
            return found
        assert time.monotonic() < deadline, "no transaction of the gateway's reached the node's pool"
        await asyncio.sleep(0.02)


def head_of(anvil: AnvilProcess) -> int:
    return int(anvil.rpc("eth_blockNumber"), 16)  # type: ignore[arg-type]


async def final_bill(link: MeterLink, seq: int, timeout: float) -> Bill:
    deadline = time.monotonic() + timeout
    while True:
        bill = await next_of(link, Bill, timeout=max(0.1, deadline - time.monotonic()))
        if bill.seq == seq and bill.final:
            return bill


async def test_a_reorganisation_that_removes_a_re_sent_batchs_nonce_loses_nothing_and_the_next_batch_follows_at_once(
        anvil_meter, anvil_billing, reorg_settings, anvil_deployment, anvil: AnvilProcess):
    # Production's replacement timer: what the test sees mined must come from filling the gap, not from the timer.
    settings = reorg_settings.replace(tx_replace_after=60.0)
    app = await ServerApp.start(settings, anvil_deployment)
    gateway = Account.from_key(settings.gateway_key).address
    meter = anvil_meter()
    link = MeterLink(settings.server_url, client_context(settings.ca_cert_path), meter.key, anvil_deployment.domain)
    try:
        await asyncio.wait_for(app.relay.caught_up.wait(), timeout=60)
        await link.connect()
        now = int(time.time())
        await link.send_reading(ReadingData(meter.address, 1, now - 60, 10_100))
        await next_of(link, Ack)
        provisional = await next_of(link, Bill, timeout=30)
        anvil.rpc("evm_setIntervalMining", [0])  # the node mines only when told: every step below is deterministic
        try:
            rollbacks = app.batcher.rollbacks
            anvil.rpc("anvil_reorg", [head_of(anvil) - provisional.block + 1, []])
            deadline = time.monotonic() + 10
            while app.batcher.rollbacks == rollbacks:
                if time.monotonic() > deadline:
                    anvil.rpc("evm_mine")  # an empty block on top tells the relay of the new chain
                    deadline = time.monotonic() + 10
                await asyncio.sleep(0.05)
            # The gateway sent the vanished batch again with its nonce; the node forgets it.
            resent = await until_pending(anvil, gateway, 30)
            for tx_hash in resent:
                anvil.rpc("anvil_dropTransaction", [tx_hash])
            assert gateway_pending(anvil, gateway) == []
            # A later reading of the same meter goes out in the next batch, behind the missing nonce.
            await link.send_reading(ReadingData(meter.address, 2, now - 30, 10_200))
            await next_of(link, Ack)
            await until_pending(anvil, gateway, 30)
        finally:
            anvil.rpc("evm_setIntervalMining", [1])
        resumed = head_of(anvil)
        second = await final_bill(link, 2, 60)
        # The gap was filled with the vanished batch at once: not after TX_REPLACE_AFTER (60 blocks here).
        assert second.block - resumed <= 12, f"the next batch waited {second.block - resumed} blocks"
        assert recorded(anvil_billing, meter.address) == [1, 2], "a reading was lost, reordered or recorded twice"
        await until(lambda: app.store.count() == 0, 30, "the queue to empty")
    finally:
        anvil.rpc("evm_setIntervalMining", [1])
        await link.close()
        await app.stop()


async def test_a_reorganisation_deeper_than_confirmations_submits_the_vanished_final_readings_again(
        anvil_server, anvil_meter, anvil_billing, reorg_settings, anvil_deployment, anvil: AnvilProcess):
    meter = anvil_meter()
    link = MeterLink(reorg_settings.server_url, client_context(reorg_settings.ca_cert_path), meter.key,
                     anvil_deployment.domain)
    await link.connect()
    now = int(time.time())
    for seq in (1, 2):
        await link.send_reading(ReadingData(meter.address, seq, now - 180 + 60 * seq, 10_000 + 100 * seq))
        await next_of(link, Ack)
    first = await final_bill(link, 2, 60)
    await until(lambda: anvil_server.store.count() == 0, 20, "the final readings to leave the queue")
    assert anvil_server.store.settled_count() >= 2, "final readings are not kept for a deep reorganisation"
    depth = head_of(anvil) - first.block + 1
    assert depth > reorg_settings.finality_depth
    anvil.rpc("anvil_reorg", [depth, []])  # deeper than CONFIRMATIONS: final blocks replaced
    assert anvil.rpc("eth_getTransactionByHash", [first.tx_hash]) is None
    again = await final_bill(link, 2, 90)
    assert again.block != first.block or again.tx_hash != first.tx_hash
    assert recorded(anvil_billing, meter.address) == [1, 2], "the vanished final readings were not submitted again"
    assert anvil_server.batcher.deep_resubmitted >= 1
    await link.close()


async def test_after_a_restart_a_queued_reading_is_settled_by_its_own_event_with_the_transaction_that_carried_it(
        anvil_meter, anvil_billing, reorg_settings, anvil_deployment, anvil: AnvilProcess, caplog):
    caplog.set_level(logging.INFO)
    meter = anvil_meter()
    now = int(time.time())
    earlier, later = (ReadingData(meter.address, seq, now - 180 + 60 * seq, 10_000 + 100 * seq) for seq in (1, 2))
    signed = [(d, sign_reading(meter.key, anvil_deployment.domain, d)) for d in (earlier, later)]
    receipt = anvil_billing.submit_readings([signed[0]])  # the earlier one reached the chain before the restart
    store = Store(reorg_settings.data_dir / "queue.db")
    store.put([(d, sig, d.timestamp - 60) for d, sig in signed], {})
    chain = AsyncChainClient(reorg_settings, anvil_deployment, reorg_settings.gateway_key)
    batcher = Batcher(chain, store, lambda: chain, 100, 0.05)
    try:
        await batcher.reconcile()
        # Counted mined in the block of its own event (not the head's), and its transaction is kept, rebuilt
        # from the chain, to be sent again with its nonce should that block be replaced; the later one is pending.
        assert store.mined_block(meter.address, 1) == receipt["blockNumber"]
        assert [r.data.seq for r in store.pending(10)] == [2]
        (tx, block, readings), = batcher._early_unfinal
        sent = anvil.rpc("eth_getTransactionByHash", [receipt["transactionHash"].to_0x_hex()])
        assert (tx.nonce, block, readings) == (int(sent["nonce"], 16), receipt["blockNumber"],  # type: ignore[index]
                                               [(meter.address.lower(), 1)])
        assert "0x" + tx.data.hex() == sent["input"]  # type: ignore[index]
    finally:
        await chain.close()
        store.close()
