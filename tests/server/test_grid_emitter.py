"""The grid-alert emitter: scenarios and random alerts raised through the chain, cleared at expiry."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from common.billing import Billing, from_text32
from common.settings import ROOT
from server.grid_emitter import ALL_CLEAR, CATALOGUE, AlertSpec, Emitter, Scenario


class FakeClock:
    """A clock that advances only when the emitter sleeps (starting at real time, as the chain does)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def billing(chain, deployment) -> Billing:
    return Billing(chain, deployment)


def alert_events(billing: Billing, name: str, since: int) -> list:
    return list(getattr(billing.contract.events, name)().get_logs(from_block=since))


def test_scenario_raises_its_alerts_and_clears_them_at_expiry(billing):
    since = billing.client.w3.eth.block_number + 1
    clock = FakeClock()
    emitter = Emitter(billing, clock=clock, sleep=clock.sleep)
    scenario = Scenario([
        AlertSpec("frequency_dip", 2, "", "Frequency dip", duration_s=30, after_s=5),
        AlertSpec("reduce_usage", 1, "north", "Please reduce usage", duration_s=60, after_s=10),
    ])
    emitter.run_scenario(scenario)
    raised = alert_events(billing, "GridAlert", since)
    assert [(from_text32(e.args.kind), from_text32(e.args.region), e.args.severity, e.args.message)
            for e in raised] == [("frequency_dip", "", 2, "Frequency dip"), ("reduce_usage", "north", 1,
                                                                             "Please reduce usage")]
    first, second = (int(e.args.id) for e in raised)
    emitter.wait(40)  # past the first alert's expiry only
    cleared = [int(e.args.id) for e in alert_events(billing, "GridAlertCleared", since)]
    assert cleared == [first]
    assert billing.contract.functions.isAlertActive(second).call()
    emitter.clear_all()
    assert not billing.contract.functions.isAlertActive(second).call()
    assert emitter.active == {}


def test_all_clear_clears_what_is_active_and_says_so(billing):
    since = billing.client.w3.eth.block_number + 1
    emitter = Emitter(billing)
    a = emitter.raise_alert(AlertSpec("reduce_usage", 1, "south", "Reduce", 600))
    emitter.raise_alert(AlertSpec(ALL_CLEAR, 0, "", "", 600))
    assert int(alert_events(billing, "GridAlertCleared", since)[0].args.id) == a
    notice = alert_events(billing, "GridAlert", since)[-1]
    assert from_text32(notice.args.kind) == ALL_CLEAR and "All clear" in notice.args.message
    emitter.clear_all()


def test_random_mode_draws_intervals_and_regions_within_bounds():
    emitter = Emitter(billing=None, rng=random.Random(7), regions=("north", ""), min_interval=5, max_interval=9)  # type: ignore[arg-type]
    draws = [emitter.next_interval() for _ in range(2_000)]
    assert 5 <= min(draws) and max(draws) <= 9
    specs = [emitter.random_spec() for _ in range(500)]
    assert {s.region for s in specs} == {"north", ""}
    assert {s.kind for s in specs} == {c.kind for c in CATALOGUE}


def test_scenario_file_errors_name_the_step(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": [{"kind": "x", "severity": 5}]}))
    with pytest.raises(ValueError, match="step 1"):
        Scenario.load(bad)


def test_cli_plays_the_demo_scenario_shape_and_exits_cleanly(base_settings, deployment, tmp_path, billing):
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"steps": [
        {"after_s": 0, "kind": "maintenance", "severity": 0, "region": "west", "message": "Works", "duration_s": 2}]}))
    since = billing.client.w3.eth.block_number + 1
    env = {**os.environ, "SMARTMETER_ENV_FILE": "/nonexistent", "CHAIN_RPC_URL": base_settings.chain_rpc_url,
           "DEPLOYMENTS_DIR": str(base_settings.deployments_dir)}
    done = subprocess.run([sys.executable, "scripts/grid_alert_emitter.py", "--scenario", str(scenario), "--once"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "event=grid_alert_raised" in done.stderr and "event=grid_alert_cleared" in done.stderr
    assert len(alert_events(billing, "GridAlertCleared", since)) == 1


def test_cli_says_what_to_do_when_the_chain_is_down(tmp_path):
    env = {**os.environ, "SMARTMETER_ENV_FILE": "/nonexistent", "CHAIN_RPC_URL": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "scripts/grid_alert_emitter.py", "--once"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "./run-docker.sh" in done.stderr
