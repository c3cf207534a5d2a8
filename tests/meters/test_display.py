"""The meter's display: live bill, connection state, plain-worded problems and grid alerts, and the
fleet table telling healthy meters from stuck or ended ones (with a fake clock)."""

from __future__ import annotations

import time

from rich.console import Console

from meters.display import FleetLog, describe_connection, fleet_state, render_fleet, render_meter
from meters.status import HEARTBEAT_S, STALE_AFTER_HEARTBEATS, LinkState, MeterStatus, describe_failure


def text_of(renderable) -> str:
    console = Console(record=True, width=140, force_terminal=False)
    console.print(renderable)
    return console.export_text()


NOW = 1_800_000_000.0


def test_a_connection_refused_reads_as_plain_words_with_the_retry_and_the_backlog():
    err = ConnectionRefusedError(111, "Connect call failed")
    text = describe_failure(err, "wss://127.0.0.1:8765", 8.2, 3)
    assert text == "cannot connect to wss://127.0.0.1:8765: connection refused; retrying in 8 s; 3 readings waiting"


def test_the_connection_reads_as_words_for_every_state():
    server = "wss://127.0.0.1:8765"
    assert describe_connection(LinkState.DISCONNECTED, server) == "disconnected from wss://127.0.0.1:8765"
    assert describe_connection(LinkState.CONNECTED, server) == "connected to wss://127.0.0.1:8765"
    assert describe_connection(LinkState.CONNECTING, server) == "connecting to wss://127.0.0.1:8765"
    assert describe_connection(LinkState.STOPPED, server) == "stopped"
    status = MeterStatus(name="m", meter="0x1", server=server, state=LinkState.DISCONNECTED)
    text = text_of(render_meter(status, NOW))
    assert "disconnected from wss://127.0.0.1:8765" in text and "disconnected to" not in text


def test_panel_shows_bill_state_error_and_alert():
    status = MeterStatus(name="meter-01", meter="0x" + "ab" * 20, region="north", archetype="medium",
                         server="wss://127.0.0.1:8765", state=LinkState.DISCONNECTED, register_wh=12_345_678,
                         last_seq=340, amount_due=1_984_879_498, period_energy_wh=64_178, unit_rate=24_670,
                         standing_charge=57_210, waiting=2)
    status.error("cannot connect to wss://127.0.0.1:8765: connection refused; retrying in 4 s; 2 readings waiting")
    status.alerts["7"] = {"id": 7, "severity": 2, "kind": "reduce_usage", "region": "north",
                          "message": "Demand peak: please reduce usage", "expires_at": time.time() + 600}
    text = text_of(render_meter(status))
    assert "£19.85 due" in text
    assert "64.178 kWh this period" in text
    assert "24.67 p/kWh + 57.21 p/day" in text
    assert "disconnected from wss://127.0.0.1:8765" in text
    assert "2 readings not yet billed" in text and "reading(s)" not in text
    assert "connection refused; retrying in 4 s; 2 readings waiting" in text
    assert "GRID ALERT CRITICAL: Demand peak: please reduce usage (north)" in text


def test_panel_shows_the_export_register_the_export_credit_and_a_bill_in_credit():
    status = MeterStatus(name="meter-05", meter="0x" + "ab" * 20, register_wh=5_000_000, export_register_wh=12_345,
                         amount_due=-1_250_000, period_export_wh=12_345, export_credit=185_175_000,
                         unit_rate=24_670, standing_charge=57_210, export_rate=15_000)
    text = text_of(render_meter(status, NOW))
    assert "exported 12.345 kWh" in text
    assert "£0.01 in credit" in text and "due" not in text.split("Live bill")[1].split("\n")[0]
    assert "12.345 kWh exported · £1.85 credit" in text
    assert "export 15.00 p/kWh" in text


def test_expired_alerts_are_not_shown():
    status = MeterStatus(name="m", meter="0x" + "ab" * 20)
    status.alerts["1"] = {"id": 1, "severity": 1, "message": "old news", "expires_at": time.time() - 1}
    assert "old news" not in text_of(render_meter(status))


def test_fleet_view_lists_every_meter_with_its_bill_and_problem():
    now = time.time()
    a = MeterStatus(name="meter-01", meter="0x1", state=LinkState.CONNECTED, amount_due=2_000_000_000, updated_at=now)
    b = MeterStatus(name="meter-02", meter="0x2", state=LinkState.DISCONNECTED, updated_at=now,
                    last_error="cannot connect to wss://x: connection refused; retrying in 2 s; 1 reading waiting")
    text = text_of(render_fleet([a, b], now))
    assert "meter-01" in text and "£20.00" in text and "connected" in text
    assert "meter-02" in text and "connection refused" in text


def test_panel_and_fleet_view_show_a_demand_response_event_and_each_meters_part():
    from common.messages import DemandResponseMessage
    from meters.display import fleet_events

    now = time.time()
    start = int(now) + 600
    event = DemandResponseMessage(id=1, modification=1, programme="flex", notice_at=start - 900, start=start,
                                  duration=1_800, ramp_up=900, signal_kind="level", signal_value=2, credit_rate=300_000,
                                  status="far")
    statuses = [MeterStatus(name=f"meter-0{i}", meter=f"0x{i}", state=LinkState.CONNECTED, updated_at=now,
                            dr_events={"1": event.model_copy(update={"opted_out": i == 3}).model_dump()})
                for i in (1, 2, 3)]
    window = f"{time.strftime('%H:%M', time.localtime(start))}-{time.strftime('%H:%M', time.localtime(start + 1_800))}"
    assert fleet_events(statuses, now) == [
        f" DEMAND RESPONSE event 1 (revision 1) (flex) {window} · level 2 · near: 2 taking part, 1 opted out "]
    assert "DEMAND RESPONSE event 1" in text_of(render_fleet(statuses, now))
    assert f"event 1 (revision 1) (flex) {window} · level 2 · near · opted out" in text_of(
        render_meter(statuses[2], now))
    credited = event.model_copy(update={"credit": 12_000_000, "baseline_wh": 500, "actual_wh": 460})
    statuses[0].dr_events = {"1": credited.model_dump()}
    assert "level 2 · completed · credited £0.12 (0.040 kWh below the baseline)" in text_of(
        render_meter(statuses[0], start + 3_600))
    assert fleet_events(statuses, start + 3 * 3_600) == [], "long over: no longer shown above the fleet"


def test_status_round_trips_through_json():
    status = MeterStatus(name="m", meter="0x1", state=LinkState.CONNECTED, amount_due=5, alerts={"1": {"id": 1}})
    assert MeterStatus.from_json(status.to_json()) == status


def test_a_healthy_meter_whose_last_reading_was_55_s_ago_is_not_stale():
    # Readings come up to 60 s apart; the heartbeat wrote the status 8 s ago.
    status = MeterStatus(name="meter-01", meter="0x1", state=LinkState.CONNECTED, last_reading_at=int(NOW - 55),
                         updated_at=NOW - 8)
    assert not status.stale(NOW)
    assert fleet_state(status, NOW)[0] == "connected"
    text = text_of(render_fleet([status], NOW))
    assert "connected" in text and "no status" not in text


def test_a_running_meter_that_missed_three_heartbeats_shows_as_no_status():
    threshold = 3 * HEARTBEAT_S
    fresh = MeterStatus(name="meter-01", meter="0x1", state=LinkState.CONNECTED, updated_at=NOW - threshold + 1)
    stuck = MeterStatus(name="meter-02", meter="0x2", state=LinkState.CONNECTED, updated_at=NOW - threshold - 1)
    assert not fresh.stale(NOW) and stuck.stale(NOW)
    assert fleet_state(stuck, NOW) == (f"no status for {int(threshold + 1)} s", "bold red")
    text = text_of(render_fleet([fresh, stuck], NOW))
    assert f"no status for {int(threshold + 1)} s" in text


def test_the_staleness_threshold_follows_the_heartbeat_the_meter_announced():
    slow = MeterStatus(name="m", meter="0x1", state=LinkState.CONNECTED, heartbeat_s=20.0, updated_at=NOW - 45)
    assert not slow.stale(NOW)
    assert slow.stale(NOW + 16)


def test_a_stopped_meter_is_never_stale_and_an_ended_process_shows_as_such():
    stopped = MeterStatus(name="meter-01", meter="0x1", state=LinkState.STOPPED, updated_at=NOW - 3600)
    assert fleet_state(stopped, NOW) == ("stopped", "dim")
    assert fleet_state(stopped, NOW, exit_code=0) == ("stopped", "dim")
    # A meter that said it was connected and whose process is gone: killed, not stopped.
    killed = MeterStatus(name="meter-02", meter="0x2", state=LinkState.CONNECTED, updated_at=NOW - 2)
    assert fleet_state(killed, NOW, exit_code=-9) == ("ended (killed by SIGKILL)", "bold red")
    crashed = MeterStatus(name="meter-03", meter="", state=LinkState.STOPPED)
    assert fleet_state(crashed, NOW, exit_code=1) == ("ended (exit code 1)", "bold red")
    text = text_of(render_fleet([stopped, killed, crashed], NOW, exit_codes={"meter-02": -9, "meter-03": 1}))
    assert "ended (killed by SIGKILL)" in text and "ended (exit code 1)" in text
    assert "see its console.log and meter.log" in text


def test_informational_events_show_as_the_last_event_not_as_a_problem():
    status = MeterStatus(name="meter-01", meter="0x1", state=LinkState.CONNECTED, server="wss://x", updated_at=NOW)
    status.error("cannot connect to wss://x: connection refused; retrying in 2 s; 1 reading waiting", NOW - 20)
    status.resolved("connected to wss://x; 1 reading resent", NOW - 5)
    assert status.last_error == "" and status.last_event == "connected to wss://x; 1 reading resent"
    panel = text_of(render_meter(status, NOW))
    assert "Last event" in panel and "connected to wss://x; 1 reading resent (5 s ago)" in panel
    assert "Problem" not in panel and "connection refused" not in panel
    fleet = text_of(render_fleet([status], NOW))
    assert "resent" not in fleet and "connection refused" not in fleet


def test_the_plain_fleet_prints_a_meter_only_when_its_state_bill_or_problem_changes_in_pounds():
    log = FleetLog()
    a = MeterStatus(name="meter-01", meter="0x1", state=LinkState.CONNECTED, amount_due=1_950_704_382, last_seq=7,
                    updated_at=NOW)
    b = MeterStatus(name="meter-02", meter="0x2", state=LinkState.CONNECTED, amount_due=0, updated_at=NOW)
    assert log.lines([a, b], NOW) == [
        "fleet meter=meter-01 state='connected' bill='£19.51' seq=7 waiting=0 problem=''",
        "fleet meter=meter-02 state='connected' bill='£0.00' seq=0 waiting=0 problem=''",
    ]
    # Nothing changed: nothing printed, however often it is asked (a heartbeat, a new reading of the same bill).
    a.updated_at, a.last_seq = NOW + 4, 8
    assert log.lines([a, b], NOW + 5) == [] and log.lines([a, b], NOW + 10) == []
    a.amount_due, a.bill_final = 1_990_000_000, False
    assert log.lines([a, b], NOW + 11) == [
        "fleet meter=meter-01 state='connected' bill='£19.90 (provisional)' seq=8 waiting=0 problem=''"]
    b.state = LinkState.DISCONNECTED
    b.error("lost the connection to wss://127.0.0.1:8765: connection refused; retrying in 4 s; 1 reading waiting")
    assert log.lines([a, b], NOW + 12) == [
        "fleet meter=meter-02 state='disconnected' bill='£0.00' seq=0 waiting=0 problem='lost the connection to "
        "wss://127.0.0.1:8765: connection refused; retrying in 4 s; 1 reading waiting'"]
    # A stuck meter is one change, not one a second as its "no status for ..." grows.
    later = NOW + STALE_AFTER_HEARTBEATS * HEARTBEAT_S + 5
    b.updated_at = later  # meter-02 still writes its status; meter-01 stopped at NOW + 4
    assert log.lines([a, b], later) == [
        f"fleet meter=meter-01 state='no status for {int(later - NOW - 4)} s' bill='£19.90 (provisional)' seq=8 "
        "waiting=0 problem=''"]
    b.updated_at = later + 20
    assert log.lines([a, b], later + 20) == []
    assert log.lines([a, b], later + 21, {"meter-01": -9}) == [
        "fleet meter=meter-01 state='ended (killed by SIGKILL)' bill='£19.90 (provisional)' seq=8 waiting=0 "
        "problem=\"the meter's process ended (killed by SIGKILL); see its console.log and meter.log\""]
