"""Fixtures for server tests: an in-process server on free ports and registered test meters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from common.batches import pack_reading
from common.billing import Billing
from common.devchain import free_port
from common.eip712 import ReadingData, sign_reading
from common.settings import GANACHE_DEV_KEYS, Settings
from common.tls import client_context
from meters.link import MeterLink
from server.app import ServerApp


@pytest.fixture
def billing(chain, deployment) -> Billing:
    """Typed access to the session's contract."""
    return Billing(chain, deployment)


@pytest.fixture
def server_settings(base_settings: Settings, tmp_path, new_index_url) -> Settings:
    """Settings for one test's server: its own data directory, index and ports."""
    return base_settings.replace(data_dir=tmp_path / "data", server_port=free_port(), http_port=free_port(),
                                 batch_max_wait=0.05, index_url=new_index_url())


@pytest.fixture
async def server(server_settings: Settings, deployment) -> AsyncIterator[ServerApp]:
    """A running server (gateway, batcher, relay) in the test's event loop."""
    app = await ServerApp.start(server_settings, deployment)
    await app.relay.caught_up.wait()
    yield app
    await app.stop()


@pytest.fixture
def new_meter(billing: Billing) -> Callable[..., LocalAccount]:
    """Register a fresh meter on chain (opened a day ago) and return its account."""

    def make(region: str = "north", opening_wh: int = 10_000, active: bool = True) -> LocalAccount:
        account = Account.create()
        billing.register_meter(account.address, b"\x42" * 32, region, opening_wh, int(time.time()) - 86_400)
        if not active:
            billing.deactivate_meter(account.address)
        return account

    return make


@pytest.fixture
def link_for(server_settings: Settings, deployment) -> Callable[[LocalAccount], MeterLink]:
    """A MeterLink for an account, trusting the server's generated CA."""

    def make(account: LocalAccount) -> MeterLink:
        return MeterLink(server_settings.server_url, client_context(server_settings.ca_cert_path),
                         account.key, deployment.domain)

    return make


HISTORY_WRITER_KEY = GANACHE_DEV_KEYS[5]


@pytest.fixture(scope="session")
def _history_writer_role(chain, deployment) -> str:
    """A second key with the gateway role, so tests can write history without racing the server's nonces."""
    contract = chain.contract(deployment)
    role = contract.functions.GATEWAY_ROLE().call()
    writer = Account.from_key(HISTORY_WRITER_KEY).address
    if not contract.functions.hasRole(role, writer).call():
        chain.transact(chain.settings.admin_key, contract.functions.grantRole(role, writer))
    return HISTORY_WRITER_KEY


@pytest.fixture
def write_readings(chain, deployment, _history_writer_role) -> Callable[..., Awaitable[tuple[int, int]]]:
    """Put signed readings of a meter on chain directly: ``await write(account, [(seq, ts, wh[, export_wh]), ...])``.

    Returns the position of the last event written (wait for the index with ``indexed``).
    """
    contract = chain.contract(deployment)

    def submit(account: LocalAccount, rows: list[tuple[int, ...]]) -> tuple[int, int]:
        position = (0, 0)
        for i in range(0, len(rows), 100):
            chunk = [ReadingData(account.address, *row) for row in rows[i:i + 100]]  # (seq, ts, wh[, export])
            batch = b"".join(pack_reading(d, sign_reading(account.key, deployment.domain, d)) for d in chunk)
            call = contract.functions.submitReadings(batch)
            position = last_event(chain.transact(_history_writer_role, call))
        return position

    async def write(account: LocalAccount, rows: list[tuple[int, ...]]) -> tuple[int, int]:
        return await asyncio.to_thread(submit, account, rows)

    return write


def last_event(receipt) -> tuple[int, int]:
    """The (block, log index) of a transaction's last event."""
    logs = receipt["logs"]
    return (int(receipt["blockNumber"]), int(logs[-1]["logIndex"]) if logs else 0)


async def meters_indexed(app: ServerApp, *addresses: str, timeout: float = 20.0) -> None:
    """Wait until the server's index has read these meters' registration from the chain."""
    deadline = time.monotonic() + timeout
    while any(app.index.meter(a) is None for a in addresses):
        assert time.monotonic() < deadline, f"the index did not learn of {addresses} in {timeout} s"
        await asyncio.sleep(0.05)


async def indexed(app: ServerApp, position: tuple[int, int], timeout: float = 20.0) -> None:
    """Wait until the server's index has applied everything up to ``position`` (see ``last_event``)."""
    deadline = time.monotonic() + timeout
    while (app.index.position() or (-1, -1)) < position:
        assert time.monotonic() < deadline, f"the index did not reach {position}: {app.index.position()}"
        await asyncio.sleep(0.05)
