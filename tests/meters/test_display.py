"""The meter's display: live bill, connection state, plain-worded problems and grid alerts."""

from __future__ import annotations

import time

from rich.console import Console

from meters.display import render_fleet, render_meter
from meters.status import LinkState, MeterStatus, describe_failure


def text_of(renderable) -> str:
    console = Console(record=True, width=140, force_terminal=False)
    console.print(renderable)
    return console.export_text()


def test_a_connection_refused_reads_as_plain_words_with_the_retry_and_the_backlog():
    err = ConnectionRefusedError(111, "Connect call failed")
    text = describe_failure(err, "wss://127.0.0.1:8765", 8.2, 3)
    assert text == (
        "cannot reach server at wss://127.0.0.1:8765: connection refused; retrying in 8 s; 3 readings waiting"
    )


def test_panel_shows_bill_state_error_and_alert():
    status = MeterStatus(name="meter-01", meter="0x" + "ab" * 20, region="north", archetype="medium",
                         server="wss://127.0.0.1:8765", state=LinkState.DISCONNECTED, register_wh=12_345_678,
                         last_seq=340, amount_due=1_984_879_498, period_energy_wh=64_178, unit_rate=24_670,
                         standing_charge=57_210, waiting=2)
    status.error("cannot reach server at wss://127.0.0.1:8765: connection refused; retrying in 4 s; 2 readings waiting")
    status.alerts["7"] = {"id": 7, "severity": 2, "kind": "reduce_usage", "region": "north",
                          "message": "Demand peak: please reduce usage", "expires_at": time.time() + 600}
    text = text_of(render_meter(status))
    assert "£19.85 due" in text
    assert "64.178 kWh this period" in text
    assert "24.67 p/kWh + 57.21 p/day" in text
    assert "disconnected" in text
    assert "connection refused; retrying in 4 s; 2 readings waiting" in text
    assert "GRID ALERT CRITICAL: Demand peak: please reduce usage (north)" in text


def test_expired_alerts_are_not_shown():
    status = MeterStatus(name="m", meter="0x" + "ab" * 20)
    status.alerts["1"] = {"id": 1, "severity": 1, "message": "old news", "expires_at": time.time() - 1}
    assert "old news" not in text_of(render_meter(status))


def test_fleet_view_lists_every_meter_with_its_bill_and_problem():
    now = time.time()
    a = MeterStatus(name="meter-01", meter="0x1", state=LinkState.CONNECTED, amount_due=2_000_000_000, updated_at=now)
    b = MeterStatus(name="meter-02", meter="0x2", state=LinkState.DISCONNECTED, updated_at=now,
                    last_error="cannot reach server at wss://x: connection refused; retrying in 2 s; 1 reading waiting")
    text = text_of(render_fleet([a, b], now))
    assert "meter-01" in text and "£20.00" in text and "connected" in text
    assert "meter-02" in text and "connection refused" in text


def test_status_round_trips_through_json():
    status = MeterStatus(name="m", meter="0x1", state=LinkState.CONNECTED, amount_due=5, alerts={"1": {"id": 1}})
    assert MeterStatus.from_json(status.to_json()) == status
