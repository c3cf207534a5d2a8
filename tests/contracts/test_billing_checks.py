"""The review's small fixes to SmartMeterBilling: the recovered signer is never the zero address, the
``ReadingRecorded`` layout its NatSpec gives is the one the code packs, the compiler checks the contract
against ``IMeterBilling`` (the views DemandResponse reads), and finding the tariff version in force costs
the log of the number of versions, not their number."""

from __future__ import annotations

import re

from common.billing import Billing
from common.chain import ChainClient
from common.compiler import SOURCE_PATH
from common.deployment import Deployment
from common.events import RECORD_FIELDS
from common.settings import ROOT
from common.tariff import PERIOD_SECONDS, TariffVersion

SOURCE = SOURCE_PATH.read_text()
DAY = 86_400


def _function(name: str) -> str:
    """The body of one of the contract's functions, from its signature to the next function."""
    start = SOURCE.index(f"function {name}(")
    end = SOURCE.find("    function ", start + 1)
    return SOURCE[start:end]


def test_the_signature_check_refuses_a_zero_signer_in_so_many_words() -> None:
    body = _function("_signedByMeter")
    # ecrecover leaves no output (zero) for a signature it cannot recover: that must never match a meter.
    assert re.search(r"iszero\(iszero\(signer\)\)", body), body
    assert "eq(signer, meter)" in body


def test_the_reading_recorded_natspec_gives_the_layout_the_indexer_and_verifier_unpack() -> None:
    doc = SOURCE[SOURCE.index("Emitted when a reading is recorded"):SOURCE.index("event ReadingRecorded(")]
    widths = [int(w) for w in re.findall(r"\((\d+)\)", " ".join(line.strip("/ ") for line in doc.splitlines()))]
    assert widths == [bits for _, _, bits in RECORD_FIELDS]
    assert sum(widths) == 256 - 1  # the state word without its active bit
    assert [low for _, low, _ in RECORD_FIELDS] == [sum(widths[:i]) for i in range(len(widths))]
    verifier = (ROOT / "tools" / "verify" / "bill.mjs").read_text()
    assert "periodExportCredit: (word >> 208n) & MASK47" in verifier


def test_the_billing_contract_is_declared_an_imeterbilling_so_the_compiler_checks_the_views() -> None:
    assert re.search(r"contract SmartMeterBilling is [^{]*\bIMeterBilling\b", SOURCE)
    interface = (ROOT / "contracts" / "IMeterBilling.sol").read_text()
    demand_response = (ROOT / "contracts" / "DemandResponse.sol").read_text()
    assert "interface IMeterBilling" in interface and "interface IMeterBilling" not in demand_response
    assert 'import {IMeterBilling} from "./IMeterBilling.sol";' in demand_response


def test_finding_an_old_version_costs_the_log_of_the_number_of_versions(
    chain: ChainClient, deployment: Deployment, snapshot: None
) -> None:
    billing = Billing(chain, deployment)
    fn = billing.contract.functions

    def lookup_gas() -> int:
        return int(fn.tariffVersionAt(1).estimate_gas())  # version 1: the far end of a scan from the newest

    assert fn.tariffVersionAt(1).call() == 1
    few = lookup_gas()
    earliest = billing.now() + billing.settings.max_future_skew + 60
    start = -(-earliest // PERIOD_SECONDS) * PERIOD_SECONDS
    for i in range(63):
        billing.set_tariff(TariffVersion.flat(20_000 + i, 50_000, start + i * DAY))
    assert fn.tariffCount().call() >= 64 and fn.tariffVersionAt(1).call() == 1
    many = lookup_gas()
    # A scan from the newest reads 63 more cold slots (2,100 gas each); a binary search about six.
    assert many - few < 8 * 2_100, (few, many)
