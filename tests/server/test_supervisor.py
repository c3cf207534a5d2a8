"""The supervisor: a part that fails is started again with back-off and counted; one that keeps
failing is marked; any task ending before the server stops is reported at once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.supervisor import Supervisor


def events(caplog) -> list[dict[str, str]]:
    return [{"event": r.getMessage(), **{k: str(v) for k, v in getattr(r, "fields", {}).items()}}
            for r in caplog.records if r.name == "supervisor"]


async def test_a_supervised_task_that_raises_is_restarted_and_counted(caplog):
    caplog.set_level(logging.INFO, logger="supervisor")
    supervisor = Supervisor(first=0.05, cap=0.2)
    runs: list[int] = []
    release = asyncio.Event()

    async def part() -> None:
        runs.append(len(runs) + 1)
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")
        await release.wait()

    task = supervisor.keep_running("batcher", part)
    for _ in range(100):
        if len(runs) == 3:
            break
        await asyncio.sleep(0.02)
    status = supervisor.parts["batcher"]
    assert runs == [1, 2, 3] and status.running
    assert (status.restarts, status.failures_in_a_row, status.last_error) == (2, 2, "RuntimeError: boom 2")
    logged = events(caplog)
    assert [e["event"] for e in logged] == ["task_failed", "task_restarted", "task_failed", "task_restarted"]
    assert logged[0]["error"] == "RuntimeError: boom 1" and logged[0]["task"] == "batcher"
    supervisor.stop()
    release.set()
    await task
    assert not task.cancelled() and status.ended


async def test_a_part_that_keeps_failing_is_marked_and_one_that_runs_steadily_is_forgiven():
    supervisor = Supervisor(first=0.01, cap=0.01, stable_after=0.3, down_after=3)
    steady = asyncio.Event()
    failures = 0

    async def part() -> None:
        nonlocal failures
        if not steady.is_set():
            failures += 1
            raise OSError("disk I/O error")
        await asyncio.sleep(3600)

    task = supervisor.keep_running("relay", part)
    status = supervisor.parts["relay"]
    while failures < 4:
        await asyncio.sleep(0.01)
    assert status.keeps_failing and status.failures_in_a_row >= 3
    steady.set()
    await asyncio.sleep(0.6)  # running past stable_after: its earlier failures no longer count
    assert status.running and status.failures_in_a_row == 0 and not status.keeps_failing
    supervisor.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_task_ending_before_the_server_stops_is_reported_at_once(caplog):
    caplog.set_level(logging.INFO, logger="supervisor")
    supervisor = Supervisor()

    async def http() -> None:
        raise ConnectionResetError("socket closed under us")

    async def part() -> None:
        return None  # a part returns only when told to stop: a return is final, not restarted

    watched = asyncio.get_running_loop().create_task(http(), name="http")
    supervisor.watch(watched)
    ended = await asyncio.wait_for(supervisor.ended(), timeout=2)
    assert ended.name == "http" and "ConnectionResetError: socket closed under us" in ended.sentence()
    assert "start it again" in ended.sentence()
    assert events(caplog)[-1]["event"] == "task_ended"
    kept = supervisor.keep_running("indexer", part)
    await kept
    assert supervisor.parts["indexer"].ended and supervisor.parts["indexer"].restarts == 0


async def test_tasks_ending_after_stop_are_not_reported():
    supervisor = Supervisor()

    async def gateway() -> None:
        await asyncio.sleep(0.05)

    supervisor.watch(asyncio.get_running_loop().create_task(gateway(), name="gateway"))
    supervisor.stop()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(supervisor.ended(), timeout=0.2)
