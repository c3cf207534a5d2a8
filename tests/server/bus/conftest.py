"""Fixtures for the bus: one real nats-server with JetStream per test, on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.bus.natsd import NatsConfig, NatsServer


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A single nats-server (JetStream in files, ``sync_interval: always``) for one test."""
    server = NatsServer(NatsConfig.local(tmp_path / "nats" / "js"))
    server.start()
    yield server.url
    server.stop()
