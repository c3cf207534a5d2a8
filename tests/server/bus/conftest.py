"""Fixtures for the bus: one real nats-server with JetStream per test, on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.devchain import free_port
from server.bus.natsd import NatsConfig, NatsServer


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A single nats-server (JetStream in files, ``sync_interval: always``) for one test."""
    server = NatsServer(NatsConfig(name="test", host="127.0.0.1", port=free_port(), http_port=free_port(),
                                   store_dir=tmp_path / "nats" / "store"))
    server.start()
    yield server.url
    server.stop()
