"""No log holds a credential: the real server (``python -m server`` with two gateway worker processes) is
used the ways a credential reaches it (the dashboard in Chromium with its live feed, as the operator and as
a customer; the REST API with the operator's key, a customer's key and a bearer token; a sign-in with a
meter's key; a refused key and a refused token; an old client putting its key in the live feed's URL) and a
meter runs through the gateway, then every log file the run wrote is read for each of those credentials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from playwright.async_api import Browser, expect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from common.devchain import free_port
from common.logs import REDACTED, fingerprint
from common.settings import ROOT, Settings
from meters.identity import MeterIdentity, meter_dir
from operations.provisioning import provision
from tests.server.api.test_dashboard import UI_TIMEOUT_MS
from tests.server.api.test_dashboard import browser as browser  # noqa: F401 - fixture
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

API = "/api/v1"
#: What a log file is called: the server's and the meter's logs, and what a process printed besides.
LOG_SUFFIXES = (".log", ".out")


def log_files(base: Path) -> list[Path]:
    """Every log file under ``base``."""
    return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in LOG_SUFFIXES)


async def live_as(url: str, first: dict[str, str] | None) -> dict:
    """Open the live feed at ``url``, send ``first`` (if any) as its first message, and return its first answer
    (a refusal may come, and the socket close, before ``first`` is sent)."""
    async with connect(url) as ws:
        if first is not None:
            try:
                await ws.send(json.dumps(first))
            except ConnectionClosed:
                pass
        return dict(json.loads(await ws.recv()))


async def sign_in(api: httpx.AsyncClient, directory: Path, identity: MeterIdentity) -> str:
    """A bearer token for the meter, signed in with its own key."""
    challenge = (await api.post(f"{API}/auth/challenge", params={"meter": identity.address})).json()
    account = Account.from_key(identity.key(directory))
    signature = account.sign_message(encode_typed_data(full_message=challenge["typed_data"])).signature
    issued = await api.post(f"{API}/auth/token", json={"meter": identity.address, "nonce": challenge["nonce"],
                                                       "signature": "0x" + bytes(signature).hex()})
    assert issued.status_code == 200, issued.text
    return str(issued.json()["token"])


async def test_no_log_of_any_process_holds_a_credential_it_was_given(
        base_settings: Settings, deployment, browser: Browser, tmp_path):  # noqa: F811 - the fixture
    settings = base_settings.replace(data_dir=tmp_path / "data", server_port=free_port(), http_port=free_port(),
                                     batch_max_wait=0.05, gateway_workers=2)
    provision(settings, count=1, history_days=0)
    directory = meter_dir(settings.data_dir, "meter-01")
    identity = MeterIdentity.load(directory)
    server = ServerProcess(settings, tmp_path / "server.log")
    await server.start()
    operator_key = (settings.data_dir / "api" / "operator.key").read_text().strip()
    customer_key = json.loads((settings.data_dir / "customers.json").read_text())["customers"][0]["api_key"]
    refused_key = "refused-" + Account.create().key.hex()[2:34]
    live_url = f"ws://{settings.server_host}:{settings.http_port}{API}/live"
    try:
        async with httpx.AsyncClient(base_url=settings.http_url, timeout=30) as api:
            token = await sign_in(api, directory, identity)
            refused_token = token[:-8] + "00000000"
            as_operator = await api.get(f"{API}/meters", headers={"X-API-Key": operator_key})
            as_customer = await api.get(f"{API}/auth/me", headers={"X-API-Key": customer_key})
            with_token = await api.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})
            key_refused = await api.get(f"{API}/auth/me", headers={"X-API-Key": refused_key})
            token_refused = await api.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {refused_token}"})
        for key in (operator_key, customer_key):  # the dashboard, signed in by a link as run-demo.sh prints it
            page = await browser.new_page()
            await page.goto(f"{settings.http_url}/#key={key}")
            await expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=UI_TIMEOUT_MS)
            await page.close()
        live_token = await live_as(live_url, {"type": "auth", "token": token})
        live_refused = await live_as(live_url, {"type": "auth", "key": refused_key})
        old_key_client = await live_as(f"{live_url}?key={operator_key}", None)
        old_token_client = await live_as(f"{live_url}?token={token}", None)
        meter = subprocess.run(
            [sys.executable, "-m", "meters", "meter-01", "--plain", "--stop-after", "1"], cwd=ROOT,
            env={**server.env(), "TIME_SCALE": "15", "READING_MIN_INTERVAL": "15", "READING_MAX_INTERVAL": "15"},
            stdout=open(tmp_path / "meter-01.out", "ab"), stderr=subprocess.STDOUT, timeout=180)  # noqa: SIM115
    finally:
        status = server.interrupt()  # stopped, so that every line is written
    assert status == 0 and meter.returncode == 0, (tmp_path / "meter-01.out").read_text()[-2000:]

    written = {path.relative_to(tmp_path).as_posix(): path.read_text(errors="replace") for path in log_files(tmp_path)}
    assert {"server.log", "meter-01.out", "data/meters/meter-01/meter.log"} <= set(written), sorted(written)
    credentials = {"the operator's key": operator_key, "a customer's key": customer_key, "a bearer token": token,
                   "a bearer token's signature": token.rsplit(".", 1)[1], "a refused key": refused_key,
                   "a refused token": refused_token, "the meter's private key": identity.key(directory).hex()}
    leaks = [f"{what} in {name}, line {n}: {line[:300]}" for name, text in written.items()
             for n, line in enumerate(text.splitlines(), 1) for what, secret in credentials.items() if secret in line]
    assert not leaks, "\n".join(leaks)
    # uvicorn did log the old client's URL, with the key taken out; the worker processes logged the meter's login.
    assert f"/live?key={REDACTED}" in written["server.log"] and f"/live?token={REDACTED}" in written["server.log"]
    assert "event=login " in written["server.log"] and " worker=" in written["server.log"]

    assert (as_operator.status_code, as_customer.json()["role"], with_token.json()["role"]) == (
        200, "customer", "customer")
    for refusal, secret in ((key_refused, refused_key), (token_refused, refused_token)):
        assert refusal.status_code == 401 and secret not in refusal.text and fingerprint(secret) in refusal.text
    assert (live_token["type"], live_token["meter"]) == ("hello", identity.address)
    assert live_refused == {"type": "error", "code": "unauthorized",
                            "message": f"this API key is not known ({fingerprint(refused_key)})"}
    assert old_key_client["code"] == old_token_client["code"] == "credentials_in_url"
