"""Several chain writers on the bus: a core killed in the middle of its batches loses nothing the gateways
acknowledged and records nothing twice; its partitions of the reading log go to the core left."""

from __future__ import annotations

import asyncio
import time

from eth_account import Account

from common.events import unpack_record
from common.settings import GANACHE_DEV_KEYS
from server.app import ServerApp
from tests.server.endpoint.test_workers import stream_readings
from tests.support import ServerProcess

#: The second core's key (given the gateway role here; no other test uses it).
SECOND_WRITER_KEY = GANACHE_DEV_KEYS[6]


def grant_gateway_role(chain, deployment, key: str) -> None:
    """Give ``key`` the gateway role, as an operator adding a chain writer would."""
    contract = chain.contract(deployment)
    role = contract.functions.GATEWAY_ROLE().call()
    address = Account.from_key(key).address
    if not contract.functions.hasRole(role, address).call():
        chain.transact(chain.settings.admin_key, contract.functions.grantRole(role, address))


async def test_a_core_killed_mid_batch_loses_nothing_and_duplicates_nothing(
        server_settings, deployment, nats_url, new_meter, link_for, chain, tmp_path):
    grant_gateway_role(chain, deployment, SECOND_WRITER_KEY)
    settings = server_settings.replace(bus_url=nats_url, bus_partitions=8)
    doomed = ServerProcess(settings.replace(server_role="core", data_dir=tmp_path / "doomed", http_port=0),
                           tmp_path / "doomed.log")
    await doomed.start(ready="server_started")
    survivor = await ServerApp.start(settings.replace(gateway_key=SECOND_WRITER_KEY), deployment)
    try:
        assert survivor.partitions is not None
        deadline = time.monotonic() + 60
        while len(survivor.partitions.held) != 4:  # two cores: four partitions each
            assert time.monotonic() < deadline, f"the partitions were never shared: {survivor.partitions.held}"
            await asyncio.sleep(0.2)
        accounts = [new_meter() for _ in range(8)]
        count, start = 40, time.time() - 1_000
        acked: dict[str, set[int]] = {a.address: set() for a in accounts}
        streams = asyncio.gather(*(stream_readings(a, link_for, count, acked[a.address], start, ack_timeout=30.0,
                                                   pause=0.05, ack_timeout_reconnects=True) for a in accounts))
        while min(len(s) for s in acked.values()) < 12:
            assert not streams.done(), streams.exception()
            await asyncio.sleep(0.05)
        log = doomed.log_path.read_text()
        assert "batch_mined" in log, "the doomed core wrote nothing before it was killed"
        doomed.kill()
        await asyncio.wait_for(streams, 240)
        # A reading logged but whose ack the meter did not see (its connection closed meanwhile) is not in ``acked``:
        # the meter carried on from the gateway's last used seq. It is on chain all the same (checked below).
        assert all(max(acked[a.address]) == count for a in accounts)
        contract = chain.w3.eth.contract(address=deployment.address, abi=deployment.abi)
        deadline = time.monotonic() + 120
        while any(contract.functions.meterState(a.address).call()[4] < count for a in accounts):
            if time.monotonic() > deadline:
                js = survivor.core.nc.jetstream()
                infos = [await js.consumer_info("READINGS", f"writer-p{n}") for n in range(8)]
                raise AssertionError(("the readings never all reached the chain",
                                      [contract.functions.meterState(a.address).call()[4] for a in accounts],
                                      survivor.store.count(), {n: len(h.messages) for n, h in
                                                               survivor.partitions.held.items()},
                                      [(i.num_pending, i.num_ack_pending, i.delivered.stream_seq) for i in infos],
                                      (await js.stream_info("READINGS")).state))
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # room for a wrong second submission to land
        for account in accounts:
            logs = contract.events.ReadingRecorded().get_logs(from_block=deployment.block,
                                                              argument_filters={"meter": account.address})
            assert sorted(unpack_record(int(e.args.record))["seq"] for e in logs) == list(range(1, count + 1))
            # (so every acknowledged reading, ``acked`` being within 1..count, is on chain exactly once)
        assert len(survivor.partitions.held) == 8, "the killed core's partitions were not taken over"
    finally:
        ServerProcess.kill_all()
        await survivor.stop()
