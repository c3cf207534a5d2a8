"""``/health``: every part (chain, batcher, relay, indexer) with a state and a reason, HTTP 200
only when all are up, 503 naming the part and why otherwise; cheap and free of secrets."""

from __future__ import annotations

import asyncio
import time

import httpx

from server.api.auth import OPERATOR_KEY_FILE
from server.health import (
    BATCHER_DOWN_AFTER,
    ChainProbe,
    GatewayHealth,
    HealthParts,
    State,
    judge_batcher,
    judge_chain,
    judge_gateway,
    judge_indexer,
    judge_relay,
    overall,
    redact,
)
from server.supervisor import PartStatus

HEALTH = "/api/v1/health"


async def get_health(server) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.settings.http_url, timeout=20) as api:
        return await api.get(HEALTH)


async def test_a_healthy_server_answers_200_with_every_part_up_and_its_usual_fields(server, deployment):
    response = await get_health(server)
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["reason"]) == ("ok", "every part is up")
    parts = body["parts"]
    assert {name: part["state"] for name, part in parts.items()} == {
        "chain": "up", "batcher": "up", "relay": "up", "indexer": "up", "gateway": "up"}
    assert parts["chain"]["reachable"] and parts["chain"]["chain_id"] == deployment.chain_id
    assert parts["chain"]["latest_block"] >= deployment.block
    assert parts["batcher"]["running"] and parts["batcher"]["queued"] == 0
    assert parts["batcher"]["failures_in_a_row"] == 0 and parts["batcher"]["oldest_queued_seconds"] is None
    assert parts["relay"]["connected"] and parts["relay"]["caught_up"]
    assert parts["relay"]["last_block"] >= deployment.block
    assert parts["indexer"]["running"] and parts["indexer"]["chain_head"] == parts["chain"]["latest_block"]
    # what the dashboard and other clients read stays where it was
    assert body["chain_id"] == deployment.chain_id and body["contract"] == deployment.address
    assert {"index_block", "meters", "connected_meters", "timezone"} <= body.keys()
    secrets = [server.settings.gateway_key, server.settings.gateway_key.removeprefix("0x"),
               (server.settings.data_dir / "api" / OPERATOR_KEY_FILE).read_text().strip()]
    assert not any(secret in response.text for secret in secrets)


async def test_the_chain_is_asked_once_however_many_poll_at_once(server, monkeypatch):
    asked: list[str] = []
    request = server.chain.request

    async def counting(method, params):
        asked.append(method)
        return await request(method, params)

    monkeypatch.setattr(server.health, "chain_request", counting)
    await asyncio.sleep(server.health.ttl)  # whatever was asked before is stale now
    answers = await asyncio.gather(*(get_health(server) for _ in range(20)))
    assert all(a.status_code == 200 for a in answers)
    assert sorted(asked) == ["eth_blockNumber", "eth_chainId"]


async def test_a_stopped_relay_gives_503_degraded_naming_the_relay(server):
    server.relay.stop()
    await server.tasks[0]
    response = await get_health(server)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["reason"].startswith("relay: down")
    assert body["parts"]["relay"]["state"] == "down" and not body["parts"]["relay"]["running"]
    assert body["parts"]["batcher"]["state"] == "up"


async def test_an_unreachable_chain_gives_503_down_and_says_what_to_do(server, ganache, chain):
    await asyncio.to_thread(ganache.stop)
    try:
        deadline = time.monotonic() + 30
        while (response := await get_health(server)).json()["parts"]["chain"]["state"] == "up":
            assert time.monotonic() < deadline, "the chain's absence never showed"
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(ganache.start)
        chain._nonces.clear()
    body = response.json()
    assert response.status_code == 503 and body["status"] == "down"
    assert not body["parts"]["chain"]["reachable"] and "./run-docker.sh" in body["parts"]["chain"]["reason"]
    assert body["reason"].startswith("chain: down")
    await asyncio.wait_for(server.relay.caught_up.wait(), timeout=60)


# ---------------------------------------------------------------- judging, without a server


def up_parts() -> HealthParts:
    running = PartStatus("part", running=True)
    return HealthParts(
        chain=judge_chain(ChainProbe(1337, 50, None), 1337),
        batcher=judge_batcher(running, 0, None, None, 0, None, None, time.time()),
        relay=judge_relay(running, True, True, 50),
        indexer=judge_indexer(running, 40, 50, 0, None, time.time()),
    )


def test_the_whole_is_down_when_readings_cannot_reach_the_chain_and_degraded_when_another_part_is_not_up():
    parts = up_parts()
    assert overall(parts) == ("ok", "every part is up")
    relay_down = judge_relay(PartStatus("relay", running=True), False, False, None)
    status, reason = overall(HealthParts(parts.chain, parts.batcher, relay_down, parts.indexer))
    assert status == "degraded" and reason.startswith("relay: down, not connected")
    wrong_chain = judge_chain(ChainProbe(1, 50, None), 1337)
    assert wrong_chain.state is State.DOWN and "CHAIN_RPC_URL points at another chain" in wrong_chain.reason
    assert overall(HealthParts(wrong_chain, parts.batcher, parts.relay, parts.indexer))[0] == "down"


def test_a_failing_batcher_is_degraded_then_down_and_one_that_keeps_dying_is_down():
    now = time.time()
    running = PartStatus("batcher", running=True)
    briefly = judge_batcher(running, 5, 3.0, None, 2, now - 5, "OperationalError: database is locked", now)
    assert briefly.state is State.DEGRADED and "database is locked" in briefly.reason
    long = judge_batcher(running, 5, 60.0, None, 9, now - BATCHER_DOWN_AFTER - 1, "OperationalError: x", now)
    assert long.state is State.DOWN
    restarting = PartStatus("batcher", running=False, failures_in_a_row=1, last_error="ValueError: bug")
    assert judge_batcher(restarting, 0, None, None, 0, None, None, now).state is State.DEGRADED
    dying = PartStatus("batcher", running=False, failures_in_a_row=3, restarts=2, last_error="ValueError: bug")
    judged = judge_batcher(dying, 0, None, None, 0, None, None, now)
    assert judged.state is State.DOWN and "keeps failing" in judged.reason
    stale = judge_batcher(running, 7, 300.0, now - 1, 0, None, None, now)
    assert stale.state is State.DEGRADED and "falling behind" in stale.reason


def test_reasons_keep_a_urls_host_but_not_its_credentials_or_path():
    text = "ChainUnavailable: the chain at https://user:hunter2@node.example:8545/v3/0123abcd kept failing"
    assert redact(text) == "ChainUnavailable: the chain at https://node.example:8545 kept failing"
    probe = ChainProbe(None, None, redact(text))
    assert "hunter2" not in judge_chain(probe, 1337).reason
    died = PartStatus("relay", running=False, failures_in_a_row=1, last_error=text)
    assert "hunter2" not in judge_relay(died, False, False, None).reason


def test_the_gateway_is_up_with_every_worker_listening_degraded_while_some_restart_and_down_with_none():
    assert judge_gateway(1, 1, 12) == GatewayHealth(State.UP, "12 meters connected", 1, 1, 12)
    assert judge_gateway(4, 4, 900).reason == "900 meters connected over 4 worker processes"
    some = judge_gateway(4, 3, 700)
    assert some.state is State.DEGRADED and some.reason.startswith("1 of 4 gateway worker processes are down")
    assert judge_gateway(2, 0, 0).state is State.DOWN
    parts = up_parts()
    status, reason = overall(HealthParts(parts.chain, parts.batcher, parts.relay, parts.indexer, gateway=some))
    assert status == "degraded" and reason.startswith("gateway: degraded, 1 of 4")
