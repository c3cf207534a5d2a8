"""Fixtures for server tests: an in-process server on free ports and registered test meters."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from common.billing import Billing
from common.devchain import free_port
from common.settings import Settings
from meters.link import MeterLink
from server.app import ServerApp
from server.tls import client_context


@pytest.fixture
def billing(chain, deployment) -> Billing:
    """Typed access to the session's contract."""
    return Billing(chain, deployment)


@pytest.fixture
def server_settings(base_settings: Settings, tmp_path) -> Settings:
    """Settings for one test's server: its own data directory and port."""
    return base_settings.replace(data_dir=tmp_path / "data", server_port=free_port(), http_port=free_port(),
                                 batch_max_wait=0.05)


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
