"""``meterctl tariff --withdraw``: a version set far ahead is withdrawn so a nearer one can be added (in
one command), the tariff list and statements stop showing it, and what cannot be withdrawn is refused
with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import InvalidRequest
from common.settings import ROOT, Settings
from operations.control import Operations

DAY = 86_400


@pytest.fixture
def settings(base_settings: Settings, deployment: object, tmp_path: Path, snapshot: None) -> Settings:
    """The session's chain (reverted after the test) with a data directory of the test's own."""
    return base_settings.replace(data_dir=tmp_path / "data")


@pytest.fixture
def ops(settings: Settings) -> Operations:
    return Operations(settings)


def meterctl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/meterctl.py", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **settings.as_env()}, timeout=60)


def test_a_far_version_is_withdrawn_and_a_nearer_one_added_in_one_command(ops: Operations, settings: Settings) -> None:
    before = ops.tariff_history()
    far = ops.set_tariff("40", "70", "5", effective_from=(ops.billing.now() + 200 * DAY) // 1_800 * 1_800)
    assert far.version == before[-1].version + 1
    with pytest.raises(InvalidRequest, match="withdraw it first"):
        ops.set_tariff("30", "60", "5", effective_from=(ops.billing.now() + 2 * DAY) // 1_800 * 1_800)

    result = meterctl(settings, "tariff", "--withdraw", str(far.version), "--unit-rate", "30")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"tariff version {far.version} withdrawn; it would have started ")
    history = ops.tariff_history()
    assert history[:-1] == before and history[-1].version == far.version and history[-1].unit_rate == 30_000
    assert history[-1].effective_from < far.effective_from


def test_what_cannot_be_withdrawn_is_refused_with_the_reason(ops: Operations, settings: Settings) -> None:
    newest = ops.tariff_history()[-1]
    with pytest.raises(InvalidRequest, match="only the newest tariff version"):
        ops.withdraw_tariff(newest.version + 1)
    result = meterctl(settings, "tariff", "--withdraw", "1")
    assert result.returncode == 1 and "only the newest tariff version" in result.stderr
    soon = ops.set_tariff("31", "60", "5")  # the first half hour the contract allows: a few minutes ahead
    ops.billing.client.w3.provider.make_request(
        "evm_increaseTime", [soon.effective_from - ops.billing.now() - ops.settings.max_future_skew + 1])
    ops.billing.client.w3.provider.make_request("evm_mine", [])
    with pytest.raises(InvalidRequest, match="no recorded reading is repriced"):
        ops.withdraw_tariff(soon.version)


def test_the_last_clock_change_is_withdrawn_by_its_time(ops: Operations, settings: Settings) -> None:
    clock = ops.billing.schedule().clock
    at, minutes = clock.changes[-1]
    result = meterctl(settings, "tariff", "--withdraw-clock-change", str(at))
    assert result.returncode == 0, result.stderr
    assert "withdrawn" in result.stdout.splitlines()[0]
    assert ops.billing.schedule().clock.changes == clock.changes[:-1]
    assert int(ops.billing.contract.functions.clockOffsetAt(at).call()) == clock.changes[-2][1] != minutes
