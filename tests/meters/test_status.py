"""A meter's status: failures in plain sentences, problems apart from events, and the status file
the fleet view reads."""

from __future__ import annotations

import json

from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from common.errors import UnknownMeter
from meters.status import LinkState, MeterStatus, describe_failure, describe_sync

URL = "wss://127.0.0.1:8765"


def test_every_kind_of_failure_reads_as_one_plain_sentence_with_what_happens_next():
    refused = describe_failure(UnknownMeter("this meter is not registered"), URL, 2.4, 1)
    assert refused == (f"the server at {URL} refused this meter: this meter is not registered [unknown_meter]; "
                       "retrying in 2 s; 1 reading waiting")
    lost = describe_failure(ConnectionClosedError(None, None), URL, 1.0, 0)
    assert lost == f"lost the connection to {URL}: the connection dropped without a goodbye; retrying in 1 s; " \
                   "no readings waiting"
    closed = describe_failure(ConnectionClosedError(Close(1011, "internal error"), None), URL, 3.0, 12)
    assert closed == (f"lost the connection to {URL}: the server closed it (code 1011: internal error); "
                      "retrying in 3 s; 12 readings waiting")
    timeout = describe_failure(TimeoutError(), URL, 0.2, 2)
    assert timeout == f"cannot connect to {URL}: no answer in time; retrying in 1 s; 2 readings waiting"


def test_being_connected_and_resent_is_an_event_in_words():
    assert describe_sync(URL, 3) == f"connected to {URL}; 3 readings resent"
    assert describe_sync(URL, 1) == f"connected to {URL}; 1 reading resent"
    assert describe_sync(URL, 0) == f"connected to {URL}; nothing was waiting to be resent"


def test_a_status_written_by_another_version_is_read_with_what_this_version_knows(tmp_path):
    status = MeterStatus(name="m", meter="0x1", state=LinkState.CONNECTED, last_event="connected", heartbeat_s=5.0)
    data = json.loads(status.to_json())
    data["some_future_field"] = 1
    assert MeterStatus.from_json(json.dumps(data)) == status
    path = tmp_path / "status.json"
    status.save(path)
    assert MeterStatus.from_json(path.read_text()).updated_at == status.updated_at > 0
