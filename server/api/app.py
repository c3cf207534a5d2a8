"""The REST API and web dashboard as one ASGI app, and the HTTP server that runs it inside the
server's event loop.

Errors are JSON with a stable code: ``{"error": {"code": "not_found", "message": "..."}}``.
The dashboard is static files (``server/dashboard/``) plus Chart.js from the project's npm
install, and the API's browsable description (``/api/docs``) is Swagger UI from the same
install (``swagger-ui-dist``): all served locally, as the machines it runs on are offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from common import errors
from common.logs import clip, log_event
from common.settings import ROOT
from server import metrics
from server.api import messages, statements
from server.api.routes import ApiContext, router
from server.api.throttle import TooManyRequests

__all__ = ["create_api", "HttpServer", "DASHBOARD_DIR", "CHART_JS", "SWAGGER_UI_DIR", "DOCS_URL"]

log = logging.getLogger("api")
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
CHART_JS = ROOT / "node_modules" / "chart.js" / "dist" / "chart.umd.js"
SWAGGER_UI_DIR = ROOT / "node_modules" / "swagger-ui-dist"
DOCS_URL = "/api/docs"
#: The files of swagger-ui-dist the docs page loads, by the name it is served under and its media type.
SWAGGER_UI_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                     "favicon-32x32.png": "image/png"}
STOP_GRACE = 5


def _status(err: errors.SmartMeterError) -> int:
    if isinstance(err, errors.ApiError):
        return err.status
    if isinstance(err, errors.RateLimited):
        return 429
    if isinstance(err, errors.AuthError):
        return 401
    if isinstance(err, errors.ChainError):
        return 503
    if isinstance(err, errors.StatementMismatch):
        return 500  # the server's own copy of the chain is wrong, not the request
    return 400


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def create_api(ctx: ApiContext) -> FastAPI:
    """The ASGI app: ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/docs``) and the dashboard."""
    app = FastAPI(
        title="Smart-meter billing API",
        version="1",
        description="Meters, readings and consumption, bills, tariffs, grid and consumption alerts, read from an "
                    "index of the billing contract's events. Send `X-API-Key` (the operator's key or an account's) "
                    "or `Authorization: Bearer <token>` (see /api/v1/auth/challenge). Every error is "
                    "`{\"error\": {\"code\": ..., \"message\": ...}}` with a stable code (`ErrorOut`); each "
                    "route lists the ones it answers.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.metrics = None
    app.state.metrics_workers = None
    app.add_middleware(metrics.RequestMetrics)
    app.include_router(router)
    app.include_router(messages.router)
    app.include_router(statements.router)

    @app.exception_handler(errors.SmartMeterError)
    async def _domain_error(request: Request, err: errors.SmartMeterError) -> JSONResponse:
        status = _status(err)
        if status >= 500:
            log_event(log, "api_error", logging.WARNING, path=clip(request.url.path), code=err.code,
                      detail=clip(err.message))
        retry = ({"Retry-After": str(err.retry_after)}
                 if isinstance(err, (TooManyRequests, errors.TooManyMessages)) else None)
        return _error(status, err.code, err.message, retry)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        loc = tuple(first.get("loc", ()))
        if loc[:1] in (("query",), ("body",), ("path",), ("header",)):
            loc = loc[1:]  # where the value came from, not its name (a body's field may be called "body")
        where = ".".join(str(p) for p in loc)
        return _error(422, errors.InvalidRequest.code, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400:  # FastAPI's answer to a body it cannot decode: bad input like any other
            return _error(422, errors.InvalidRequest.code, f"body: {err.detail}; send JSON")
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        headers = dict(err.headers) if err.headers else None
        if err.status_code == 405:
            # Every method of the path, not only those of the one route Starlette tried (RFC 9110 Allow).
            allowed = {method for route in router.routes if isinstance(route, APIRoute)
                       and route.path_regex.match(request.url.path) for method in route.methods or ()}
            headers = {"Allow": ", ".join(sorted(allowed))} if allowed else headers
        return _error(err.status_code, code, str(err.detail), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log_event(log, "api_failed", logging.ERROR, path=clip(request.url.path),
                  error=f"{type(err).__name__}: {err}"[:300])
        return _error(500, "internal_error", "the server failed to answer; see the server's log")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        """Prometheus' text format: counters, the server's gauges, process resources (server/metrics.py)."""
        server: metrics.ServerCollector | None = request.app.state.metrics
        if server is not None:
            await server.refresh()
        body = metrics.exposition(server, request.app.state.metrics_workers).render()
        return Response(body, media_type=metrics.CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD_DIR / "index.html")

    @app.get("/vendor/chart.umd.js", include_in_schema=False)
    async def chart_js() -> FileResponse:
        if not CHART_JS.exists():
            raise errors.NotFound("Chart.js is not installed; run scripts/bootstrap.sh")
        return FileResponse(CHART_JS, media_type="text/javascript")

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/api/v1/openapi.json", title=f"{app.title}: documentation",
            swagger_js_url=f"{DOCS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_URL}/favicon-32x32.png",
            # No badge from the online validator: the page must not reach beyond this server.
            swagger_ui_parameters={"validatorUrl": None})

    @app.get(DOCS_URL + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        if name not in SWAGGER_UI_ASSETS:
            raise errors.NotFound(f"no file {name} belongs to the API's documentation page")
        if not (SWAGGER_UI_DIR / name).exists():
            raise errors.NotFound("Swagger UI (swagger-ui-dist) is not installed; run scripts/bootstrap.sh")
        return FileResponse(SWAGGER_UI_DIR / name, media_type=SWAGGER_UI_ASSETS[name])

    app.mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="static")
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the server process owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serves an ASGI app on a socket bound up front (so a port in use fails start-up plainly)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.app = app
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="websockets-sansio",
                                timeout_graceful_shutdown=STOP_GRACE)
        self.server = _EmbeddedServer(config)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start serving in the running loop."""
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]), name="http")

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (live connections get closed), then return."""
        if self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=STOP_GRACE * 2)
        except asyncio.TimeoutError:
            self.server.force_exit = True
            await self.task
        self.sock.close()
