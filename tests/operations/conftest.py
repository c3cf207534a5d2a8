"""Operator-tooling tests reuse the server's and the meters' fixtures."""

from tests.meters.conftest import meter_settings  # noqa: F401
from tests.server.conftest import billing, server_settings  # noqa: F401
