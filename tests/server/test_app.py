"""The assembled server: it notices at once when one of its tasks ends before it is told to stop."""

from __future__ import annotations

import asyncio

import pytest


@pytest.mark.parametrize("task", ["http", "gateway"])
async def test_the_server_notices_its_http_server_or_gateway_ending_and_says_why(server, task, caplog):
    if task == "http":
        server.http.server.should_exit = True
    else:
        server.gateway.server.close()
    ended = await asyncio.wait_for(server.until(asyncio.Event()), timeout=15)
    assert ended is not None and ended.name == task
    assert f"the server's {task} task ended unexpectedly" in ended.sentence()
    assert any(getattr(r, "fields", {}).get("event") == "task_ended" for r in caplog.records)


async def test_a_stop_signal_ends_the_wait_without_a_failure(server):
    stop = asyncio.Event()
    waiting = asyncio.get_running_loop().create_task(server.until(stop))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    stop.set()
    assert await asyncio.wait_for(waiting, timeout=5) is None
