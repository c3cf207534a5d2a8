"""Fixtures for meter tests: provisioned meters in a temporary data directory."""

from __future__ import annotations

import pytest

from common.devchain import free_port
from common.settings import Settings


@pytest.fixture
def meter_settings(base_settings: Settings, deployment, tmp_path) -> Settings:
    """Settings with their own data directory and server port (the session's deployment)."""
    return base_settings.replace(data_dir=tmp_path / "data", server_port=free_port(), http_port=free_port(),
                                 batch_max_wait=0.05)
