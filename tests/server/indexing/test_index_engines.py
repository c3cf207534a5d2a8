"""The index in PostgreSQL: the API answers the same from it as from SQLite (two servers index the
same chain, one into each engine, and their routes that read the index give the same JSON), and
several processes share one (one writes, the others read what it commits)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from common.devchain import free_port
from common.errors import ConfigError, StorageError
from common.events import ChainEvent
from common.settings import Settings, load_settings
from common.tariff import TariffVersion
from server.api.auth import OPERATOR_KEY_FILE
from server.app import ServerApp, index_unusable
from server.indexing.index import Index
from server.indexing.index_db import describe_url, to_psycopg
from server.indexing.indexer import rebuild
from tests.server.conftest import indexed, last_event

API = "/api/v1"
HOUR = 3_600
LONDON = ZoneInfo("Europe/London")


async def answers(app: ServerApp, routes: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The JSON of each route as the operator sees it on ``app``."""
    key = (app.settings.data_dir / "api" / OPERATOR_KEY_FILE).read_text().strip()
    async with httpx.AsyncClient(base_url=app.settings.http_url, timeout=20, headers={"X-API-Key": key}) as api:
        out = []
        for path, params in routes:
            response = await api.get(API + path, params=params)
            assert response.status_code == 200, (path, response.text)
            body = response.json()
            # A page's links name the server that answered: compare them without its origin.
            for link in ("next", "previous"):
                if isinstance(body, dict) and body.get(link):
                    body[link] = body[link].removeprefix(app.settings.http_url)
            out.append(body)
        return out


@pytest.mark.parametrize("index_backend", ["postgresql"], indirect=True)
async def test_the_api_answers_the_same_from_an_index_in_sqlite_and_one_in_postgresql_shared_by_two_servers(
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
    # A third server on the first one's PostgreSQL index: it only reads it (the first one writes).
    sharing = await ServerApp.start(server_settings.replace(data_dir=tmp_path / "sharing", server_port=free_port(),
                                                            http_port=free_port()), deployment)
    try:
        assert server.index.writer and not sharing.index.writer
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
        assert await answers(sharing, routes) == from_postgresql
        readings = from_postgresql[routes.index((f"/meters/{first.address}/readings", {"page_size": 100}))]
        assert readings["count"] == 30  # the comparison is of something
    finally:
        await sharing.stop()
        await on_sqlite.stop()


def synthetic_chain(meter: str, opened: int, readings: int) -> list[ChainEvent]:
    """A flat tariff, one meter registered at ``opened`` and its readings, 15 minutes and 300 Wh apart."""
    tariff = dict(zip(("effectiveFrom", "standingCharge", "clock", "importKind", "importRate", "exportKind",
                       "exportRate", "importBands", "importBandRates", "exportBands", "exportBandRates"),
                      TariffVersion.flat(24_670, 57_210).as_struct(), strict=True))
    events = [ChainEvent("TariffChanged", {"version": 1, **tariff}, 1, 0, "0x01"),
              ChainEvent("MeterRegistered", {"meter": meter, "accountRef": b"\x42" * 32, "region": b"north",
                                             "openingWh": 10_000, "openedAt": opened}, 1, 1, "0x01")]
    for seq in range(1, readings + 1):
        register = 10_000 + 300 * seq
        events.append(ChainEvent("ReadingRecorded", {
            "meter": meter, "seq": seq, "timestamp": opened + 900 * seq, "energyWh": register, "exportWh": 0,
            "periodImportCost": (register - 10_000) * 24_670, "periodExportCredit": 0}, 1 + seq, 0, "0x02"))
    return events


@pytest.mark.parametrize("index_backend", ["postgresql"], indirect=True)
def test_one_process_writes_a_shared_postgresql_index_and_the_others_read_what_it_commits(tmp_path, new_index_url):
    url, meter, opened = new_index_url(), "0x" + "cd" * 20, 1_790_000_000
    events = synthetic_chain(meter, opened, 6)
    writer = Index(tmp_path / "unused.sqlite", LONDON, default_limit_wh=3_000, url=url)
    reader = Index(tmp_path / "unused.sqlite", LONDON, default_limit_wh=3_000, url=url)
    assert writer.writer and not reader.writer
    writer.apply(events[:4], {1: opened})
    reader.refresh(force=True)
    assert reader.meter(meter) is not None and reader.meter(meter).last_seq == 2
    assert reader.apply(events, {1: opened}).events == 0  # a reader writes no events...
    assert writer.position() == (3, 0)
    writer.apply(events, {1: opened})  # ...the writer does, and the reader sees them once committed
    reader.refresh(force=True)
    assert reader.meter(meter).last_seq == 6
    assert reader.readings(meter, 0, 2**40, False, 100, 0) == writer.readings(meter, 0, 2**40, False, 100, 0)
    assert reader.hours(meter, 0, 2**40) == writer.hours(meter, 0, 2**40)
    assert reader.period(meter, 1) == writer.period(meter, 1)
    reader.set_limit(meter, 123, by="operator")  # set through a reader's API: the writer applies it from then on
    writer.apply(synthetic_chain(meter, opened, 7)[-1:], {})
    assert writer.limit_for(meter) == 123
    with pytest.raises(StorageError):
        asyncio.run(rebuild(Settings(), None, reader))  # type: ignore[arg-type] - refused before any use
    writer.close()
    successor = Index(tmp_path / "unused.sqlite", LONDON, url=url)  # the lock went with the writer's connection
    assert successor.writer and successor.meter(meter).last_seq == 7
    successor.close()
    reader.close()
    assert not (tmp_path / "unused.sqlite").exists()


def test_index_url_is_empty_or_postgresql_and_its_password_stays_out_of_messages(tmp_path):
    assert load_settings(env_file=tmp_path / "no.env", index_url="").index_url == ""
    url = "postgresql://meter:s3cret@db.example:5433/index"
    assert load_settings(env_file=tmp_path / "no.env", index_url=url).index_url == url
    with pytest.raises(ConfigError, match="INDEX_URL"):
        load_settings(env_file=tmp_path / "no.env", index_url="mysql://meter:s3cret@db/index")
    assert describe_url(url) == "postgresql://meter@db.example:5433/index"
    error = index_unusable(describe_url(url), psycopg.OperationalError("connection refused"))
    assert error.code == "storage_error" and "s3cret" not in error.message and "INDEX_URL" in error.message


def test_placeholders_become_psycopgs_outside_quoted_text():
    assert to_psycopg("SELECT a FROM t WHERE b=? AND c=:name AND d='?:x%' AND e LIKE '%'") == (
        "SELECT a FROM t WHERE b=%s AND c=%(name)s AND d='?:x%%' AND e LIKE '%%'")
