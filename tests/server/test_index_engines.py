"""The API answers the same from the index in SQLite and in PostgreSQL: two servers index the same
chain, one into each engine, and their routes that read the index give the same JSON."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from common.devchain import free_port
from server.api.auth import OPERATOR_KEY_FILE
from server.app import ServerApp
from tests.server.conftest import indexed, last_event

API = "/api/v1"
HOUR = 3_600


async def answers(app: ServerApp, routes: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The JSON of each route as the operator sees it on ``app``."""
    key = (app.settings.data_dir / "api" / OPERATOR_KEY_FILE).read_text().strip()
    async with httpx.AsyncClient(base_url=app.settings.http_url, timeout=20, headers={"X-API-Key": key}) as api:
        out = []
        for path, params in routes:
            response = await api.get(API + path, params=params)
            assert response.status_code == 200, (path, response.text)
            out.append(response.json())
        return out


@pytest.mark.parametrize("index_backend", ["postgresql"], indirect=True)
async def test_the_api_answers_the_same_from_an_index_in_sqlite_and_one_in_postgresql(
        server, server_settings, deployment, tmp_path, new_meter, write_readings, billing):
    first, second = new_meter(region="north"), new_meter(region="south", opening_wh=5_000)
    start = (int(time.time()) - 86_400 + 7 * HOUR) // HOUR * HOUR  # after the opening a day ago
    # Uneven intervals and energies, some across hour and half-hour boundaries, import and export.
    await write_readings(first, [(i, start + i * 700 + (i % 4) * 130, 10_000 + i * 410 + (i % 3) * 77, i * 25)
                                 for i in range(1, 31)])
    await write_readings(second, [(i, start + i * 1_900, 5_000 + i * 900) for i in range(1, 9)])
    receipt = await asyncio.to_thread(billing.close_billing_period, first.address)
    await indexed(server, last_event(receipt))

    sqlite_settings = server_settings.replace(data_dir=tmp_path / "sqlite", server_port=free_port(),
                                              http_port=free_port(), index_url="")
    assert server.index.url and not sqlite_settings.index_url
    on_sqlite = await ServerApp.start(sqlite_settings, deployment)
    try:
        position = server.index.position()
        assert position is not None
        await indexed(on_sqlite, position)
        window = {"period_from": str(start), "period_to": str(start + 12 * HOUR), "order_by": "period"}
        routes: list[tuple[str, dict[str, Any]]] = [("/meters", {}), (f"/meters/{first.address}", {}),
                                                    (f"/meters/{second.address}", {}), ("/tariffs", {}),
                                                    ("/bills", {"page_size": 100}),
                                                    (f"/meters/{first.address}/bills", {}),
                                                    ("/consumption-alerts", {"page_size": 100}),
                                                    ("/grid-alerts", {"page_size": 100})]
        for meter in (first, second):
            url = f"/meters/{meter.address}/readings"
            routes += [(url, {"page_size": 100}), (url, window), (url, window | {"group_by": "hour"}),
                       (url, window | {"group_by": "day"}), (url, window | {"group_by": "halfhour"})]
        from_postgresql, from_sqlite = await answers(server, routes), await answers(on_sqlite, routes)
        for (path, params), a, b in zip(routes, from_postgresql, from_sqlite, strict=True):
            assert a == b, (path, params)
        readings = from_postgresql[routes.index((f"/meters/{first.address}/readings", {"page_size": 100}))]
        assert readings["count"] == 30  # the comparison is of something
    finally:
        await on_sqlite.stop()
