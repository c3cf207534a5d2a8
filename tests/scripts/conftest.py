"""Script tests reuse the server fixtures."""

from tests.server.conftest import billing, link_for, new_meter, server, server_settings  # noqa: F401
