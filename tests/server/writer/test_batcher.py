"""The batcher against a real Ganache and a real SQLite queue that another connection locks:
it outlives storage errors by itself, and every acknowledged reading reaches the chain once."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path

import httpx
from web3 import Web3

from common.chain import AsyncChainClient
from common.eip712 import ReadingData, sign_reading
from common.events import unpack_record
from common.messages import Ack, Bill
from server.app import ServerApp
from server.writer import batcher as batcher_module
from server.writer.batcher import Batcher
from server.writer.store import Store
from tests.server.endpoint.test_gateway import next_of

#: The queue's busy timeout in these tests (the server's default is 10 s): a lock held longer fails a write.
BUSY_MS = 500


def recorded(w3: Web3, deployment, meter: str) -> list[int]:
    """The sequence numbers the chain recorded for ``meter``, one entry per ReadingRecorded event."""
    contract = w3.eth.contract(address=deployment.address, abi=deployment.abi)
    logs = contract.events.ReadingRecorded().get_logs(from_block=deployment.block, argument_filters={"meter": meter})
    return sorted(unpack_record(int(e.args.record))["seq"] for e in logs)


def lock_queue(path: Path) -> sqlite3.Connection:
    """Another connection holding the queue's write lock (as an sqlite3 shell or a backup tool would)."""
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    return locker


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_locked_queue_database_does_not_stop_the_batcher_and_every_acked_reading_reaches_the_chain_once(
        server_settings, deployment, chain, new_meter, link_for, caplog):
    caplog.set_level(logging.INFO)
    app = await ServerApp.start(server_settings, deployment, busy_timeout_ms=BUSY_MS)
    try:
        await app.relay.caught_up.wait()
        first, second = new_meter(), new_meter()
        links = {first.address: link_for(first), second.address: link_for(second)}
        for link in links.values():
            await link.connect()
        now = int(time.time())
        chain.w3.provider.make_request("miner_stop", [])
        try:
            for seq in (1, 2, 3):  # the first in flight, the others queued behind it
                await links[first.address].send_reading(ReadingData(first.address, seq, now - 40 + seq, 10_000 + seq))
                assert (await next_of(links[first.address], Ack)).seq == seq
            for seq in (1, 2):
                await links[second.address].send_reading(ReadingData(second.address, seq, now - 40 + seq, 10_000 + seq))
                assert (await next_of(links[second.address], Ack)).seq == seq
            await wait_for(lambda: all((q := app.store.get(m, 1)) is not None and q.tx_hash for m in links), 20,
                           "the batcher never sent the first readings")
            locker = lock_queue(app.store.path)
        finally:
            chain.w3.provider.make_request("miner_start", [])
        # Mined now, but the batcher cannot take them off the queue: it must say so and keep trying.
        failing = None
        async with httpx.AsyncClient(base_url=server_settings.http_url, timeout=20) as api:
            deadline = time.monotonic() + 15
            while failing is None and time.monotonic() < deadline:
                response = await api.get("/api/v1/health")
                batcher = response.json()["parts"]["batcher"]
                if batcher["state"] != "up":
                    failing = response
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # held well past the busy timeout
            locker.execute("COMMIT")
            locker.close()
            assert failing is not None, "/health never reported the batcher failing while the queue was locked"
            body = failing.json()
            assert failing.status_code == 503 and body["status"] in ("degraded", "down")
            assert "database is locked" in body["parts"]["batcher"]["last_error"]
            assert body["parts"]["batcher"]["running"] and "batcher" in body["reason"]
            assert any(getattr(r, "fields", {}).get("event") == "queue_storage_failed" for r in caplog.records)

            for meter, last in ((first.address, 3), (second.address, 2)):
                bills = [(await next_of(links[meter], Bill, timeout=60)).seq for _ in range(last)]
                assert sorted(bills) == list(range(1, last + 1))
            await wait_for(lambda: app.store.count() == 0, 30, "the queue never emptied")
            await asyncio.sleep(1.0)  # room for a wrong second submission to land
            assert recorded(chain.w3, deployment, first.address) == [1, 2, 3]
            assert recorded(chain.w3, deployment, second.address) == [1, 2]
            assert app.supervisor.parts["batcher"].restarts == 0  # it recovered by itself

            deadline = time.monotonic() + 10
            while (response := await api.get("/api/v1/health")).status_code != 200:
                assert time.monotonic() < deadline, response.json()
                await asyncio.sleep(0.2)
            assert response.json()["parts"]["batcher"]["state"] == "up"
        for link in links.values():
            await link.close()
    finally:
        await app.stop()


class LocksTheQueueOnceSent(AsyncChainClient):
    """The real chain client, but once its first transaction is out another connection locks the queue for a while
    (the write marking the batch as sent then fails)."""

    def __init__(self, settings, deployment, key: str, queue: Path, hold: float) -> None:
        super().__init__(settings, deployment, key)
        self.queue = queue
        self.hold = hold
        self.sent: list[str] = []

    async def send_transaction(self, data: bytes, gas: int) -> str:
        tx = await super().send_transaction(data, gas)
        self.sent.append(tx)
        if len(self.sent) == 1:
            locker = lock_queue(self.queue)
            threading.Timer(self.hold, lambda: (locker.execute("COMMIT"), locker.close())).start()
        return tx


async def test_a_batch_whose_queue_write_fails_after_sending_reaches_the_chain_once_without_being_sent_again(
        base_settings, deployment, chain, new_meter, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    meter = new_meter()
    store = Store(tmp_path / "queue.sqlite", busy_timeout_ms=BUSY_MS)
    now = int(time.time())
    rows = [ReadingData(meter.address, seq, now - 300 + 60 * seq, 10_000 + 100 * seq) for seq in (1, 2, 3)]
    # Each with its previous reading's time (the first's is the meter's opening a day ago), for the gas bound.
    store.put([(d, sign_reading(meter.key, deployment.domain, d), now - 86_400 if d.seq == 1 else d.timestamp - 60)
               for d in rows], {})
    clients: list[LocksTheQueueOnceSent] = []

    def connect() -> AsyncChainClient:
        clients.append(LocksTheQueueOnceSent(base_settings, deployment, base_settings.gateway_key, store.path, 2.0))
        return clients[-1]

    main_chain = AsyncChainClient(base_settings, deployment, base_settings.gateway_key)
    batcher = Batcher(main_chain, store, connect, batch_max_size=100, batch_max_wait=0.05, confirm_wait=0.2)
    task = asyncio.get_running_loop().create_task(batcher.run())
    try:
        await wait_for(lambda: store.count() == 0 or task.done(), 30, "the readings never left the queue")
        assert not task.done(), task.exception()
        assert store.count() == 0 and store.pending(10) == []
        steps = [getattr(r, "fields", {}).get("step") for r in caplog.records
                 if getattr(r, "fields", {}).get("event") == "queue_storage_failed"]
        assert steps[0] == "mark_submitted"
        assert len(clients) == 1 and len(clients[0].sent) == 1  # waited for its outcome rather than resending
        assert recorded(chain.w3, deployment, meter.address) == [1, 2, 3]
        assert batcher.batches == 1 and batcher.failures_in_a_row == 0
    finally:
        batcher.stop()
        await asyncio.wait_for(task, 30)
        await main_chain.close()
        store.close()


async def test_a_batcher_thread_that_dies_is_restarted_and_its_batch_reaches_the_chain_once(
        server, deployment, chain, new_meter, link_for, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    real_calldata = batcher_module.submit_readings_calldata
    calls = 0

    def fails_once(rows):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("an unexpected bug while encoding a batch")
        return real_calldata(rows)

    monkeypatch.setattr(batcher_module, "submit_readings_calldata", fails_once)
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 20, 10_500))
    assert (await next_of(link, Ack)).seq == 1
    assert (await next_of(link, Bill, timeout=60)).seq == 1
    status = server.supervisor.parts["batcher"]
    assert status.restarts == 1 and status.running and "an unexpected bug" in (status.last_error or "")
    events = [getattr(r, "fields", {}).get("event") for r in caplog.records]
    assert events.index("task_failed") < events.index("task_restarted") < events.index("batcher_recovered")
    await asyncio.sleep(1.0)
    assert recorded(chain.w3, deployment, meter.address) == [1]
    await link.close()
