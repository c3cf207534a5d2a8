"""The grid-alert emitter: scenarios and random alerts raised through the real chain, cleared at
expiry, on all-clear and on shutdown; the CLI as a process."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from common.billing import Billing, from_text32
from common.chain import ChainClient
from common.devchain import free_port
from common.errors import ChainError, ChainUnavailable, ConfigError
from common.logs import parse_line
from common.settings import ROOT, Settings
from operations.grid_emitter import (
    ALL_CLEAR,
    ALL_CLEAR_MESSAGE,
    CATALOGUE,
    DAY_AHEAD_PRICES,
    AlertSpec,
    Emitter,
    RandomAlerts,
    Scenario,
    StopReason,
)
from operations.tariffs import agile_like_prices
from tests.contracts.test_demand_response import dr  # noqa: F401 - the fixture

CLI = [sys.executable, "scripts/grid_alert_emitter.py"]
CLI_TIMEOUT_S = 60
DURATION_BY_KIND = {spec.kind: int(spec.duration_s) for spec in CATALOGUE}


class FakeClock:
    """Unix time that moves only when the emitter sleeps; starts at real time, as the chain's blocks do."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start
        self.now = self.start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FlakyBilling(Billing):
    """Billing whose first raises and clears fail as an unreachable or refusing node would."""

    def __init__(self, client: ChainClient, deployment: Any, raise_failures: int, clear_failures: int) -> None:
        super().__init__(client, deployment)
        self.raise_failures = raise_failures
        self.clear_failures = clear_failures

    def raise_grid_alert(self, *args: Any, **kwargs: Any) -> Any:
        if self.raise_failures > 0:
            self.raise_failures -= 1
            raise ChainUnavailable("the chain kept failing; is it running?")
        return super().raise_grid_alert(*args, **kwargs)

    def clear_grid_alert(self, alert_id: int) -> Any:
        if self.clear_failures > 0:
            self.clear_failures -= 1
            raise ChainError("the node refused the transaction: busy")
        return super().clear_grid_alert(alert_id)


def fast_emitter(billing: Billing, clock: FakeClock, **options: Any) -> Emitter:
    return Emitter(billing, clock=clock, sleep=clock.sleep, retry_delay=1.0, **options)


def next_block(billing: Billing) -> int:
    return int(billing.client.w3.eth.block_number) + 1


def raised_since(billing: Billing, block: int) -> list[Any]:
    return list(billing.contract.events.GridAlert().get_logs(from_block=block))


def cleared_since(billing: Billing, block: int) -> list[int]:
    return [int(e.args.id) for e in billing.contract.events.GridAlertCleared().get_logs(from_block=block)]


def fields(event: Any) -> tuple[str, str, int, str]:
    return from_text32(event.args.kind), from_text32(event.args.region), int(event.args.severity), event.args.message


def is_active(billing: Billing, alert_id: int) -> bool:
    return bool(billing.contract.functions.isAlertActive(alert_id).call())


def emitter_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "emitter" and r.fields.get("event") == event]


THREE_STEPS = [
    {"after_s": 5, "kind": "frequency_dip", "severity": 2, "region": "", "message": "Frequency dip", "duration_s": 30},
    {"after_s": 10, "kind": "reduce_usage", "severity": 1, "region": "north",
     "message": "Please reduce usage between 17:00 and 19:00", "duration_s": 60},
    {"after_s": 20, "kind": "maintenance", "severity": 0, "region": "south", "message": "Works tonight",
     "duration_s": 100},
]


def test_scenario_raises_each_step_with_its_exact_fields_at_its_time(billing):
    since, clock = next_block(billing), FakeClock()
    emitter = fast_emitter(billing, clock)
    emitter.run_scenario(Scenario.from_json(THREE_STEPS))
    raised = raised_since(billing, since)
    assert [fields(e) for e in raised] == [
        ("frequency_dip", "", 2, "Frequency dip"),
        ("reduce_usage", "north", 1, "Please reduce usage between 17:00 and 19:00"),
        ("maintenance", "south", 0, "Works tonight"),
    ]
    assert [int(e.args.expiresAt) for e in raised] == [
        math.ceil(clock.start + 5 + 30), math.ceil(clock.start + 15 + 60), math.ceil(clock.start + 35 + 100)]
    assert sorted(emitter.active) == [int(e.args.id) for e in raised]
    assert emitter.shutdown() == 0


def test_each_alert_is_cleared_at_its_expiry_and_not_before(billing):
    since, clock = next_block(billing), FakeClock()
    emitter = fast_emitter(billing, clock)
    emitter.run_scenario(Scenario.from_json(THREE_STEPS[:2]))  # now: start + 15
    first, second = (int(e.args.id) for e in raised_since(billing, since))
    emitter.wait(19)  # start + 34: the first expires at start + 35
    assert cleared_since(billing, since) == [] and is_active(billing, first)
    emitter.wait(2)
    assert cleared_since(billing, since) == [first]
    assert not is_active(billing, first) and is_active(billing, second)
    emitter.wait_for_expiries()
    assert cleared_since(billing, since) == [first, second] and not is_active(billing, second)
    assert emitter.active == {} and clock.now >= math.ceil(clock.start + 75)


def test_all_clear_clears_only_this_emitters_active_alerts_then_raises_an_info_notice(billing):
    someone_else = billing.raise_grid_alert(1, "reduce_usage", "east", "Another operator", int(time.time()) + 600)
    other_id = int(billing.events("GridAlert", someone_else)[0].args.id)
    since, clock = next_block(billing), FakeClock()
    emitter = fast_emitter(billing, clock)
    a = emitter.raise_alert(AlertSpec("reduce_usage", 1, "south", "Reduce", 600))
    b = emitter.raise_alert(AlertSpec("frequency_dip", 2, "", "Dip", 600))
    assert a is not None and b is not None
    notice = emitter.raise_alert(AlertSpec(ALL_CLEAR, 2, "", "", 60))
    assert notice is not None
    assert sorted(cleared_since(billing, since)) == [a.id, b.id]
    assert fields(raised_since(billing, since)[-1]) == (ALL_CLEAR, "", 0, ALL_CLEAR_MESSAGE)
    assert list(emitter.active) == [notice.id] and is_active(billing, other_id)
    emitter.shutdown()
    billing.clear_grid_alert(other_id)


def test_a_run_stopped_by_its_deadline_clears_everything_still_active(billing):
    since, clock = next_block(billing), FakeClock()
    emitter = fast_emitter(billing, clock)
    long_alerts = Scenario.from_json({"steps": [
        {"kind": "maintenance", "region": "west", "message": "Works", "duration_s": 3600},
        {"after_s": 1, "kind": "reduce_usage", "severity": 1, "message": "Reduce", "duration_s": 3600},
    ]})
    reason = emitter.run(long_alerts, then_random=False, until=clock.start + 10)
    ids = [int(e.args.id) for e in raised_since(billing, since)]
    assert reason is StopReason.DEADLINE and len(ids) == 2
    assert sorted(cleared_since(billing, since)) == ids
    assert not any(is_active(billing, i) for i in ids) and emitter.active == {}


def test_random_draws_respect_the_interval_bounds_and_regions_and_repeat_with_a_seed():
    draws = RandomAlerts(regions=("north", ""), min_interval=5, max_interval=9, seed=7)
    intervals = [draws.next_interval() for _ in range(5_000)]
    assert 5 <= min(intervals) < 5.1 and 8.9 < max(intervals) <= 9
    alerts = [draws.next_alert() for _ in range(1_000)]
    assert {a.region for a in alerts if a.kind != ALL_CLEAR} == {"north", ""}
    assert {a.region for a in alerts if a.kind == ALL_CLEAR} == {""}
    assert {a.kind for a in alerts} == {c.kind for c in CATALOGUE}
    assert all(0 <= a.severity <= 2 and a.message for a in alerts)
    assert ALL_CLEAR not in {draws.next_alert(anything_active=False).kind for _ in range(500)}
    one, two = RandomAlerts(seed=42), RandomAlerts(seed=42)
    assert [(one.next_interval(), one.next_alert()) for _ in range(50)] == [
        (two.next_interval(), two.next_alert()) for _ in range(50)]
    with pytest.raises(ValueError, match="interval"):
        RandomAlerts(min_interval=10, max_interval=5)


def test_random_mode_raises_alerts_on_chain_at_drawn_intervals_and_clears_them(billing):
    since, clock = next_block(billing), FakeClock()
    emitter = fast_emitter(billing, clock, random_alerts=RandomAlerts(
        regions=("east", "west"), min_interval=10, max_interval=20, seed=3))
    assert emitter.run(until=clock.start + 100) is StopReason.DEADLINE
    raised = raised_since(billing, since)
    assert 4 <= len(raised) <= 9
    assert {from_text32(e.args.region) for e in raised if from_text32(e.args.kind) != ALL_CLEAR} <= {"east", "west"}
    # expiresAt = ceil(raised_at + duration): recover each raise time to the second
    starts = [int(e.args.expiresAt) - DURATION_BY_KIND[from_text32(e.args.kind)] for e in raised]
    gaps = [b - a for a, b in zip([math.ceil(clock.start), *starts], starts, strict=False)]
    assert all(9 <= g <= 21 for g in gaps), gaps
    assert sorted(cleared_since(billing, since)) == sorted(int(e.args.id) for e in raised)
    assert emitter.active == {}


def test_chain_failures_are_logged_backed_off_and_retried(chain, deployment, caplog):
    caplog.set_level(logging.INFO, logger="emitter")
    flaky = FlakyBilling(chain, deployment, raise_failures=2, clear_failures=1)
    since, clock = next_block(flaky), FakeClock()
    emitter = fast_emitter(flaky, clock)
    alert = emitter.raise_alert(AlertSpec("reduce_usage", 1, "north", "Reduce", 30))
    assert alert is not None and clock.now == clock.start + 1 + 2  # backed off 1 s, then 2 s
    failed = emitter_lines(caplog, "grid_alert_raise_failed")
    assert [(f["attempt"], f["retry_in"]) for f in failed] == [(1, "1s"), (2, "2s")]
    emitter.wait_for_expiries()  # the first clear fails, the retry a second later succeeds
    assert cleared_since(flaky, since) == [alert.id] and not is_active(flaky, alert.id)
    assert len(emitter_lines(caplog, "grid_alert_clear_failed")) == 1
    assert emitter_lines(caplog, "grid_alert_cleared")[-1]["reason"] == "expired"


def test_an_alert_the_chain_keeps_refusing_is_dropped_and_the_scenario_goes_on(billing, caplog):
    caplog.set_level(logging.INFO, logger="emitter")
    since, clock = next_block(billing), FakeClock(start=time.time() - 3_600)  # expiries lie in the chain's past
    emitter = fast_emitter(billing, clock, retry_attempts=2)
    assert emitter.raise_alert(AlertSpec("frequency_dip", 2, "", "Dip", 60)) is None
    assert "InvalidExpiry" in emitter_lines(caplog, "grid_alert_raise_failed")[0]["error"]
    assert emitter_lines(caplog, "grid_alert_dropped")[0]["reason"] == "chain_failures"
    clock.now = time.time()
    emitter.run_scenario(Scenario.from_json(THREE_STEPS[:1]))
    assert [fields(e) for e in raised_since(billing, since)] == [("frequency_dip", "", 2, "Frequency dip")]
    emitter.shutdown()


@pytest.mark.parametrize(("content", "expected"), [
    ('[{"kind": "x", "message": "m"}, {"kind": "x", "message": "m", "severity": 5}]', r"step 2: severity must be"),
    ('[{"kind": "x", "message": "m", "duration": 60}]', r"step 1: unknown key\(s\) duration"),
    ('[{"kind": "x", "message": "m", "region": "' + "r" * 33 + '"}]', r"step 1: region .* longer than 32 bytes"),
    ('[{"kind": "x"}]', r"step 1: message is missing"),
    ('[{"kind": "x", "message": "m",', r"not valid JSON \(line 1"),
    ('{"alerts": []}', r"must be a JSON list of steps"),
])
def test_a_malformed_scenario_file_is_refused_naming_the_file_and_step(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected) as caught:
        Scenario.load(path)
    assert str(path) in caught.value.message


def test_the_demo_scenario_loads():
    demo = Scenario.load(ROOT / "scripts" / "scenarios" / "demo.json")
    assert [s.kind for s in demo.steps] == ["frequency_dip", "reduce_usage", "demand_response", "maintenance",
                                            ALL_CLEAR]
    assert demo.length_s == 150


@pytest.fixture
def cli_env(base_settings: Settings, deployment, chain: ChainClient) -> Iterator[dict[str, str]]:
    """Environment for the CLI against the test chain; forgets the grid key's nonce afterwards."""
    yield {**os.environ, "SMARTMETER_ENV_FILE": "/nonexistent", "CHAIN_RPC_URL": base_settings.chain_rpc_url,
           "DEPLOYMENTS_DIR": str(base_settings.deployments_dir)}
    chain._nonces.clear()  # the CLI sent transactions with the same key from another process


def test_cli_plays_a_scenario_once_clears_its_alerts_at_expiry_and_exits_0(cli_env, billing, tmp_path):
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps([
        {"after_s": 0, "kind": "maintenance", "severity": 0, "region": "west", "message": "Works", "duration_s": 2},
        {"after_s": 0.2, "kind": "frequency_dip", "severity": 2, "region": "", "message": "Dip", "duration_s": 3},
    ]))
    since = next_block(billing)
    log_file = tmp_path / "emitter.log"
    done = subprocess.run([*CLI, "--scenario", str(scenario), "--once", "--log-file", str(log_file)],
                          cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    raised = raised_since(billing, since)
    assert [fields(e) for e in raised] == [("maintenance", "west", 0, "Works"), ("frequency_dip", "", 2, "Dip")]
    assert cleared_since(billing, since) == [int(e.args.id) for e in raised]
    lines = [parse_line(line) for line in log_file.read_text().splitlines()]
    assert [line["id"] for line in lines if line.get("event") == "grid_alert_raised"] == [
        str(e.args.id) for e in raised]
    assert {line["reason"] for line in lines if line.get("event") == "grid_alert_cleared"} == {"expired"}
    assert lines[-1]["event"] == "emitter_stopped" and lines[-1]["reason"] == "finished"


def test_cli_clears_its_active_alerts_on_sigterm_and_exits_0(cli_env, billing, tmp_path):
    since = next_block(billing)
    log_file = tmp_path / "emitter.log"
    proc = subprocess.Popen([*CLI, "--min-interval", "0.2", "--max-interval", "0.4", "--regions", "north,all",
                             "--seed", "1", "--log-file", str(log_file)],
                            cwd=ROOT, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while "event=grid_alert_raised" not in (log_file.read_text() if log_file.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=CLI_TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ids = [int(e.args.id) for e in raised_since(billing, since)]
    assert ids and not any(is_active(billing, i) for i in ids)
    last = parse_line(log_file.read_text().splitlines()[-1])
    assert (last["event"], last["reason"], last["signal"], last["left_active"]) == (
        "emitter_stopped", "stopped", "SIGTERM", "0")


def test_cli_says_to_start_the_chain_when_it_is_unreachable(cli_env):
    env = {**cli_env, "CHAIN_RPC_URL": f"http://127.0.0.1:{free_port()}"}
    done = subprocess.run([*CLI, "--random"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)
    assert done.returncode == 1
    assert "cannot reach the chain" in done.stderr and "./run-docker.sh" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_says_to_deploy_when_the_contract_is_not_deployed(cli_env, tmp_path):
    env = {**cli_env, "DEPLOYMENTS_DIR": str(tmp_path / "empty")}
    done = subprocess.run(CLI, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 1
    assert ".venv/bin/python scripts/deploy.py" in done.stderr and "Traceback" not in done.stderr



def test_a_day_ahead_prices_step_publishes_tomorrows_half_hours_and_tells_households(snapshot, billing):
    clock = FakeClock()
    emitter = fast_emitter(billing, clock)
    scenario = Scenario.from_json([{"after_s": 0, "kind": DAY_AHEAD_PRICES, "duration_s": 600}])
    alert = emitter.raise_alert(scenario.steps[0])
    assert alert is not None and alert.kind == DAY_AHEAD_PRICES and "cheapest at" in alert.message
    tz = billing.settings.tz
    tomorrow = datetime.fromtimestamp(clock(), tz).date() + timedelta(days=1)
    start = int(datetime.combine(tomorrow, datetime.min.time(), tzinfo=tz).timestamp())
    imports, exports = agile_like_prices(start, tz)
    schedule = billing.schedule()
    assert [schedule.day_ahead_import[start // 1_800 + i] for i in range(len(imports))] == imports
    assert [schedule.day_ahead_export[start // 1_800 + i] for i in range(len(exports))] == exports
    assert len(imports) in (46, 48, 50)
    peak = datetime.fromtimestamp(start + imports.index(max(imports)) * 1_800, tz)
    assert 16 <= peak.hour < 19


def test_a_demand_response_step_creates_an_event_on_chain_and_warns_its_region(snapshot, billing):
    from common.demand_response import DemandResponse, Status
    from operations.grid_emitter import DEMAND_RESPONSE, DR_CREDIT_RATE, DR_NOTICE_S

    clock = FakeClock(billing.now())
    emitter = fast_emitter(billing, clock)
    scenario = Scenario.from_json([{"after_s": 0, "kind": DEMAND_RESPONSE, "region": "north", "severity": 1,
                                    "duration_s": 600}])
    alert = emitter.raise_alert(scenario.steps[0])
    programme = DemandResponse(billing.client, billing.deployment)
    event = programme.event(programme.event_ids()[-1])
    assert alert is not None and alert.region == "north" and f"Demand response event {event.id}" in alert.message
    assert (event.regions, event.status, event.terms.signal_value, event.terms.credit_rate) == (
        ("north",), Status.FAR, 2, DR_CREDIT_RATE)
    assert event.terms.start % 1_800 == 0 and event.terms.start >= clock() + DR_NOTICE_S
    billing.client.decoder = None


def test_the_emitter_settles_a_completed_event_by_itself_once_and_a_restarted_one_takes_on_what_is_left(dr):  # noqa: F811
    from common.demand_response import Participation
    from operations.demand_response import verify
    from tests.contracts.test_demand_response import HOUR, POWER_W, RATE, make_scene

    scene = make_scene(dr)
    a, b, c = scene.meters
    clock = FakeClock(dr.billing.now())
    running = fast_emitter(dr.billing, clock)
    running.to_settle[scene.event_id] = (0, scene.terms.end + running.settle_after)  # as raise_demand_response does
    running.wait(60)  # long before the end: nothing is settled
    assert scene.event_id in running.to_settle and dr.credits(scene.event_id) == []
    # The emitter stops; the event runs and ends; a meter shifts its load out of the event's hour.
    scene.advance_to(scene.terms.end + 2 * HOUR)
    scene.read(scene.terms.start, 6 * HOUR)
    scene.read(scene.terms.end, HOUR, {a.address: 100})
    scene.read(scene.terms.end + HOUR, HOUR)

    restarted = fast_emitter(dr.billing, FakeClock(dr.billing.now()))
    assert restarted.adopt_unsettled() >= 1 and scene.event_id in restarted.to_settle
    restarted.wait(1)
    assert scene.event_id not in restarted.to_settle
    assert dr.credit_of(a.address, 1) == (POWER_W - 100) * RATE
    assert dr.participation(scene.event_id, b.address) == Participation.CREDITED
    assert verify(dr) == ([], 3)
    assert scene.event_id not in fast_emitter(dr.billing, FakeClock(dr.billing.now())).to_settle
    again = fast_emitter(dr.billing, FakeClock(dr.billing.now()))
    again.adopt_unsettled()
    assert scene.event_id not in again.to_settle, "a credited event is not settled twice"


def test_random_mode_raises_a_demand_response_event_each_dr_every_seconds(snapshot, billing):
    from common.demand_response import DemandResponse

    programme = DemandResponse(billing.client, billing.deployment)
    before = len(programme.event_ids())
    clock = FakeClock(billing.now())
    emitter = fast_emitter(billing, clock, dr_every=50, random_alerts=RandomAlerts(
        regions=("east",), min_interval=20, max_interval=20, seed=1))
    emitter.run(until=clock.start + 130)
    # Alerts at 20, 40, 60 (50 s since the start: an event), 80, 100, 120 (60 s since the last: an event).
    assert len(programme.event_ids()) - before == 2
    # A deployment made before DemandResponse existed: random mode goes on with plain alerts.
    from dataclasses import replace as with_changes

    older = Billing(billing.client, with_changes(billing.deployment, demand_response=None))
    since, clock = next_block(billing), FakeClock(billing.now())
    assert fast_emitter(older, clock, dr_every=1, random_alerts=RandomAlerts(
        regions=("east",), min_interval=20, max_interval=20, seed=1)).run(until=clock.start + 50) is StopReason.DEADLINE
    assert len(programme.event_ids()) - before == 2
    assert len(raised_since(billing, since)) == 2, "plain alerts at 20 s and 40 s"
    billing.client.decoder = None
