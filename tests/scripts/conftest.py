"""Script tests reuse the server fixtures."""

from tests.server.conftest import (  # noqa: F401
    _history_writer_role,
    billing,
    link_for,
    new_meter,
    server,
    server_settings,
    write_readings,
)
