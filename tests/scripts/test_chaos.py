"""The chaos harness in its quick form: faults of every kind, nothing lost, nothing duplicated."""

from __future__ import annotations

from scripts.harness.chaos import ChaosConfig, run_chaos


def test_quick_chaos_run_loses_and_duplicates_nothing(tmp_path):
    report = run_chaos(ChaosConfig(meters=3, readings=40, gateway_kills=1, chain_restarts=1, meter_drops=1),
                       base=tmp_path, say=lambda _: None)
    assert len(report.faults) == 3
    assert report.lost == 0 and report.duplicated == 0, report.table()
    assert all(v.register_ok and v.bill_ok for v in report.verdicts), report.table()
    assert all(v.recorded >= 40 for v in report.verdicts)
