"""The real-network fault run in its quick form, on Anvil with a block a second: reorganisations
(one followed by dropping the batch the gateway sends again, one deeper than CONFIRMATIONS), a fee
spike, a dropped pending transaction, a node restart and a gateway SIGKILL; nothing lost,
nothing duplicated, every bill as the chain's events make it, the index as a fresh reindex."""

from __future__ import annotations

import pytest

from scripts.harness.faults import FaultConfig, recovery_times, run_faults

pytestmark = pytest.mark.slow


def test_quick_fault_run_on_a_reorganising_chain_loses_and_duplicates_nothing(tmp_path):
    report = run_faults(FaultConfig(meters=3, readings=30, reorgs=2, fee_spikes=1, drops=1, resent_drops=1,
                                    deep_reorgs=1), base=tmp_path, say=lambda _: None)
    assert sum(n for kind, n in report.faults.items() if kind.startswith("reorg depth")) == 2
    assert report.faults["reorg, then the batch sent again dropped"] == 1, report.notes
    assert sum(n for kind, n in report.faults.items() if kind.startswith("deep reorg")) == 1
    assert report.faults["gateway SIGKILL"] == 1 and report.faults["node restart from its state file"] == 1
    assert report.faults["fee spike x10"] == 1 and report.faults["pending transaction dropped"] == 1, report.notes
    assert report.lost == 0 and report.duplicated == 0, report.summary()
    assert all(v.register_ok and v.bill_ok for v in report.verdicts), report.summary()
    assert not report.index_differences, report.summary()
    assert all(v.recorded >= 30 for v in report.verdicts)


def test_the_time_to_the_next_batch_after_each_reorganisation_is_read_from_the_server_log():
    log = "\n".join([
        'ts=2026-12-07T12:00:00.000Z level=info logger=batcher event=batch_mined size=1',
        'ts=2026-12-07T12:00:01.000Z level=warning logger=relay event=chain_reorganised fork=9 depth=1',
        'ts=2026-12-07T12:00:01.500Z level=warning logger=relay event=chain_reorganised fork=9 depth=2',
        'ts=2026-12-07T12:00:03.250Z level=info logger=batcher event=batch_mined_again size=1',
        'ts=2026-12-07T12:00:09.000Z level=warning logger=relay event=chain_reorganised fork=12 depth=1',
    ])
    assert recovery_times(log) == [2.25, 1.75]
