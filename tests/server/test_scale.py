"""1,000 concurrent authenticated meter connections, each getting its own bill."""

from __future__ import annotations

import asyncio
import time

from eth_account import Account

from common.eip712 import ReadingData
from common.messages import Bill

METERS = 1_000


async def test_thousand_concurrent_meters_each_get_their_bill(server, billing, link_for):
    accounts = [Account.create() for _ in range(METERS)]
    opened = int(time.time()) - 86_400
    await asyncio.to_thread(
        billing.register_meters, [(a.address, b"\x07" * 32, "east", 5_000) for a in accounts], opened
    )
    links = [link_for(a) for a in accounts]
    gate = asyncio.Semaphore(100)

    async def login(link):
        async with gate:
            return await link.connect()

    welcomes = await asyncio.gather(*(login(link) for link in links))
    assert len(server.hub) == METERS
    assert all(w.last_seq == 0 for w in welcomes)
    now = int(time.time())
    await asyncio.gather(*(
        link.send_reading(ReadingData(a.address, 1, now - 5, 5_000 + 100 + i))
        for i, (a, link) in enumerate(zip(accounts, links, strict=True))
    ))

    async def bill_of(link):
        while True:
            msg = await link.recv(timeout=180)
            if isinstance(msg, Bill):
                return msg

    bills = await asyncio.gather(*(bill_of(link) for link in links))
    for i, (account, bill) in enumerate(zip(accounts, bills, strict=True)):
        assert bill.meter.lower() == account.address.lower()
        assert (bill.seq, bill.energy_wh, bill.period_energy_wh) == (1, 5_100 + i, 100 + i)
    await asyncio.gather(*(link.close() for link in links))
