"""A client written from docs/protocol.md alone, as an outside developer would: its own TLS
context trusting the generated CA, its own EIP-712 signing, nothing from common/, meters/ or
server/ (the fixtures only start the chain and the server and register a meter)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

from eth_account import Account
from eth_account.messages import encode_typed_data
from websockets.asyncio.client import connect

DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def load_domain(deployments_dir, chain_id: int = 1337) -> dict:
    data = json.loads((deployments_dir / f"{chain_id}.json").read_text())
    return {"name": "SmartMeterBilling", "version": "1", "chainId": data["chainId"],
            "verifyingContract": data["address"]}


def sign(key, domain: dict, primary: str, fields: list[dict], message: dict) -> str:
    typed = {"types": {"EIP712Domain": DOMAIN_TYPE, primary: fields}, "primaryType": primary,
             "domain": domain, "message": message}
    return "0x" + bytes(Account.sign_message(encode_typed_data(full_message=typed), key).signature).hex()


def reading(key, domain: dict, meter: str, seq: int, timestamp: int, energy_wh: int, export_wh: int) -> dict:
    fields = [{"name": "meter", "type": "address"}, {"name": "seq", "type": "uint64"},
              {"name": "timestamp", "type": "uint64"}, {"name": "energyWh", "type": "uint64"},
              {"name": "exportWh", "type": "uint64"}]
    sig = sign(key, domain, "Reading", fields, {"meter": meter, "seq": seq, "timestamp": timestamp,
                                                  "energyWh": energy_wh, "exportWh": export_wh})
    return {"type": "reading", "meter": meter, "seq": seq, "timestamp": timestamp, "energyWh": energy_wh,
            "exportWh": export_wh, "signature": sig}


async def login(url: str, ca_file: str, account, domain: dict):
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.load_verify_locations(ca_file)  # verify_mode is CERT_REQUIRED and check_hostname True by default
    ws = await connect(url, ssl=tls)
    challenge = json.loads(await ws.recv())
    assert challenge["type"] == "challenge" and challenge["domain"] == domain
    nonce = challenge["nonce"]
    login_type = [{"name": "meter", "type": "address"}, {"name": "nonce", "type": "bytes32"}]
    sig = sign(account.key, domain, "Login", login_type, {"meter": account.address, "nonce": bytes.fromhex(nonce[2:])})
    await ws.send(json.dumps({"type": "auth", "meter": account.address, "nonce": nonce, "signature": sig}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def next_of(ws, kind: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        if msg["type"] == kind:
            return msg


async def test_independent_client_logs_in_sends_a_reading_and_gets_its_bill(server, server_settings, new_meter,
                                                                           billing):
    account = new_meter()
    domain = load_domain(server_settings.deployments_dir)
    ws, welcome = await login(server_settings.server_url, str(server_settings.ca_cert_path), account, domain)
    seq, register = welcome["lastSeq"] + 1, welcome["lastEnergyWh"] + 321
    await ws.send(json.dumps(reading(account.key, domain, account.address, seq, int(time.time()) - 5, register, 45)))
    assert (await next_of(ws, "ack"))["seq"] == seq
    bill = await next_of(ws, "bill")
    assert (bill["seq"], bill["energyWh"], bill["periodEnergyWh"]) == (seq, register, 321)
    assert (bill["exportWh"], bill["periodExportWh"]) == (45, 45)
    assert bill["amountDue"] == billing.bill(account.address).amount_due
    await ws.close()


async def test_reading_with_a_bad_signature_gets_a_code_and_never_reaches_the_chain(server, server_settings,
                                                                                  new_meter, billing):
    account = new_meter()
    domain = load_domain(server_settings.deployments_dir)
    ws, welcome = await login(server_settings.server_url, str(server_settings.ca_cert_path), account, domain)
    forged = reading(Account.create().key, domain, account.address, 1, int(time.time()) - 5, 10_100, 0)
    await ws.send(json.dumps(forged))
    error = await next_of(ws, "error")
    assert (error["code"], error["seq"]) == ("bad_signature", 1)
    await asyncio.sleep(1.0)
    assert billing.meter(account.address).last_seq == 0
    await ws.close()
