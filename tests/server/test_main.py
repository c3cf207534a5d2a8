"""``python -m server`` as a process: a damaged database stops it with one plain sentence and
status 1, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from eth_account import Account

from common.eip712 import ReadingData
from common.settings import ROOT
from server.api.conversations import Conversations
from server.writer.store import Store

PAGE = 4096


def run_server(settings, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server"], cwd=ROOT, env={**os.environ, **settings.as_env()},
                          capture_output=True, text=True, timeout=timeout)


def damage_beyond_the_first_page(path) -> None:
    """Keep SQLite's header and schema page, overwrite the rest: the file opens but its tables cannot be read."""
    size = path.stat().st_size
    assert size > 2 * PAGE
    with open(path, "r+b") as f:
        f.seek(PAGE)
        f.write(b"\x55" * (size - PAGE))


@pytest.mark.parametrize("damage", ["garbage", "corrupt_pages"])
def test_a_damaged_queue_stops_the_server_with_storage_error_and_what_to_do(server_settings, deployment, damage):
    queue = server_settings.data_dir / "gateway" / "queue.sqlite"
    queue.parent.mkdir(parents=True)
    if damage == "garbage":
        queue.write_bytes(b"this is not a database, it was overwritten by a careless copy\n" * 100)
    else:
        store = Store(queue)
        rows = [(ReadingData("0x" + f"{i:040x}", 1, int(time.time()), 10_000), "0x" + "ab" * 65, int(time.time()) - 60)
                for i in range(300)]
        store.put(rows, {})
        store.close()
        damage_beyond_the_first_page(queue)
    done = run_server(server_settings)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("server: cannot start [storage_error]: the gateway's queue ")
    assert str(queue) in last and "move the file aside" in last and "resent by the meters from their outboxes" in last


def test_a_damaged_index_stops_the_server_saying_it_is_rebuilt_from_the_chain(server_settings, deployment):
    index = server_settings.data_dir / "index" / "index.sqlite"
    index.parent.mkdir(parents=True)
    index.write_bytes(os.urandom(3 * PAGE))
    done = run_server(server_settings)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("server: cannot start [storage_error]: the API's index ")
    assert str(index) in last and "rebuilds it from the chain" in last


@pytest.mark.parametrize("damage", ["garbage", "corrupt_pages"])
def test_a_damaged_messages_database_stops_the_server_saying_it_holds_the_customers_messages(
        server_settings, deployment, damage):
    messages = server_settings.data_dir / "api" / "messages.sqlite"
    messages.parent.mkdir(parents=True)
    if damage == "garbage":
        messages.write_bytes(os.urandom(3 * PAGE))
    else:
        store = Conversations(messages, rate_per_minute=1_000)
        for i in range(300):
            store.add("0x" + "ab" * 32, "customer", f"message {i} " + "x" * 100, time.time())
        store.close()
        damage_beyond_the_first_page(messages)
    done = run_server(server_settings)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("server: cannot start [storage_error]: the messages database ")
    assert str(messages) in last and "holds the customers' messages" in last and "restore it from a backup" in last


def test_a_gateway_key_without_the_gateway_role_stops_the_server_naming_the_grant_command(
        server_settings, deployment):
    # A fresh key: the well-known ones may hold the role by now (tests of several gateways grant it on this chain).
    outsider = Account.create()
    done = run_server(server_settings.replace(gateway_key=outsider.key.hex()))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"server: cannot start [config_error]: the gateway key ({outsider.address}) does not "
                           "hold GATEWAY_ROLE")
    assert f"scripts/meterctl.py gateway add {outsider.address}" in last
