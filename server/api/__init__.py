"""The REST API and web dashboard (FastAPI), served by the server process on ``HTTP_PORT``."""

from server.api.app import HttpServer, create_api
from server.api.routes import ApiContext

__all__ = ["ApiContext", "HttpServer", "create_api"]
