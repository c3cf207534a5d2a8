"""The alerting rules (``ops/prometheus/alerts.yml``): valid for Prometheus, firing when they should
(``promtool test rules``), and written on metrics the server exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from server import metrics

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "ops" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus; "
                                                             "scripts/bootstrap.sh --browser installs it)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_the_rules_and_the_scrape_configuration_are_valid():
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 10 rules found" in rules.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@needs_promtool
def test_the_rules_fire_when_their_unit_tests_say(tmp_path):
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # And the unit tests can fail: with the queue's threshold raised, its alert no longer fires when expected.
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(RULES / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    rules.write_text(rules.read_text().replace("smartmeter_queue_oldest_reading_age_seconds > 600",
                                              "smartmeter_queue_oldest_reading_age_seconds > 6000"))
    broken = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert broken.returncode != 0 and "SmartMeterReadingsQueuedTooLong" in broken.stdout + broken.stderr


def test_every_metric_the_rules_use_is_one_the_server_exposes():
    used = set(re.findall(r"\bsmartmeter_[a-z_]+", (RULES / "alerts.yml").read_text()))
    source = Path(metrics.__file__).read_text()
    assert used, "no metric found in the rules"
    assert {name for name in used if f'"{name}"' not in source} == set()
