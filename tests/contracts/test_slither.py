"""Slither on both contracts through the compiler shim: every medium or high finding is triaged (scripts/slither.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scripts.slither import TRIAGE_PATH, findings, judge, load_triage, summary


def _result(check: str, impact: str, function: str, *expressions: str) -> dict[str, Any]:
    """A detector result shaped as Slither's JSON report writes one."""
    parent = {"type": "function", "name": function,
              "type_specific_fields": {"parent": {"type": "contract", "name": "SmartMeterBilling"}}}
    nodes = [{"type": "node", "name": e, "type_specific_fields": {"parent": parent}} for e in expressions]
    return {"check": check, "impact": impact, "description": f"{check} in {function} (contracts/X.sol#1)",
            "elements": [parent, *nodes]}


def _report(*results: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "results": {"detectors": list(results)}}


TRIAGE = [{"check": "incorrect-equality", "where": "SmartMeterBilling._check", "expressions": ["word & 1 == 0"],
           "reason": "the active flag bit"}]


def test_a_listed_finding_passes_and_low_ones_are_only_counted() -> None:
    found, counts = findings(_report(_result("incorrect-equality", "Medium", "_check", "word & 1 == 0"),
                                     _result("timestamp", "Low", "_check", "x < block.timestamp")))
    verdict = judge(found, counts, TRIAGE)
    assert verdict.ok and counts == {"Medium": 1, "Low": 1}
    assert "1 medium/high, 1 listed" in summary(verdict)


def test_a_new_finding_fails_the_run_with_the_entry_to_list() -> None:
    found, counts = findings(_report(_result("incorrect-equality", "Medium", "_check", "word & 1 == 0"),
                                     _result("reentrancy-eth", "High", "closeBillingPeriod", "_state[meter] = w")))
    verdict = judge(found, counts, TRIAGE)
    assert not verdict.ok and [f.key for f in verdict.new] == [
        ("reentrancy-eth", "SmartMeterBilling.closeBillingPeriod", ("_state[meter] = w",))]
    assert 'where = "SmartMeterBilling.closeBillingPeriod"' in summary(verdict)


def test_a_listed_finding_that_is_gone_fails_the_run() -> None:
    found, counts = findings(_report(_result("incorrect-equality", "Medium", "_check", "word & 2 == 0")))
    verdict = judge(found, counts, TRIAGE)
    assert [e["where"] for e in verdict.stale] == ["SmartMeterBilling._check"] and len(verdict.new) == 1
    assert "STALE" in summary(verdict)


def test_a_triage_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "triage.toml"
    path.write_text('[[finding]]\ncheck = "weak-prng"\nwhere = "A.f"\nexpressions = []\nreason = "..."\n')
    with pytest.raises(SystemExit, match="gives no reason"):
        load_triage(path)


def test_every_checked_in_triage_entry_gives_its_reason() -> None:
    entries = load_triage(TRIAGE_PATH)
    assert entries and all(len(e["reason"]) > 20 for e in entries)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_slither_finds_no_medium_or_high_finding_that_is_not_triaged() -> None:
    from scripts.slither import check

    verdict = check()
    assert verdict.findings, "Slither reported nothing: the run did not analyse the contracts"
    assert verdict.ok, summary(verdict)
