"""Fees: EIP-1559 from the node's fee history, legacy without it, and what a replacement offers."""

from __future__ import annotations

import pytest

from common.fees import Fees, SendProblem, classify_send_error, suggest_fees

GWEI = 10**9


def test_a_chain_with_a_base_fee_gets_twice_the_next_base_fee_plus_the_median_tip() -> None:
    history = {"baseFeePerGas": [hex(GWEI), hex(3 * GWEI)], "reward": [["0x0"], [hex(2 * GWEI)], [hex(4 * GWEI)],
                                                                     [hex(3 * GWEI)]]}
    fees, floor = suggest_fees(history, node_tip=GWEI, gas_price=None)
    assert fees == Fees(2 * 3 * GWEI + 3 * GWEI, 3 * GWEI)
    assert floor == 3 * GWEI + 3 * GWEI
    assert fees.fields() == {"maxFeePerGas": 9 * GWEI, "maxPriorityFeePerGas": 3 * GWEI}


def test_empty_blocks_take_the_nodes_suggested_tip() -> None:
    fees, _ = suggest_fees({"baseFeePerGas": ["0x1", hex(GWEI)], "reward": [["0x0"]]}, node_tip=GWEI // 2,
                           gas_price=None)
    assert fees == Fees(2 * GWEI + GWEI // 2, GWEI // 2)


def test_a_chain_without_base_fees_gets_a_legacy_gas_price() -> None:
    fees, floor = suggest_fees(None, None, gas_price=7 * GWEI)
    assert fees.legacy and fees.fields() == {"gasPrice": 7 * GWEI} and floor == 7 * GWEI
    fees, _ = suggest_fees({"baseFeePerGas": ["0x0", "0x0"], "reward": []}, None, gas_price=5)
    assert fees.legacy


def test_a_replacement_offers_at_least_an_eighth_more_on_both_fields() -> None:
    fees = Fees(3 * GWEI, GWEI)
    bumped = fees.bumped()
    assert bumped.max_fee >= 3 * GWEI * 1.1 and bumped.priority_fee is not None and bumped.priority_fee >= GWEI * 1.1
    assert Fees(1, 0).bumped() == Fees(2, 1)  # tiny values still rise
    assert Fees(10, None).bumped() == Fees(12, None)


def test_capping_keeps_the_tip_within_the_max_fee() -> None:
    assert Fees(50 * GWEI, 20 * GWEI).capped(10 * GWEI) == Fees(10 * GWEI, 10 * GWEI)
    assert Fees(5, 2).at_least(Fees(4, 3)) == Fees(5, 3)


@pytest.mark.parametrize(("message", "problem"), [
    ("nonce too low", SendProblem.NONCE_USED),
    ("the tx doesn't have the correct nonce. account has nonce of: 5 tx has nonce of: 4", SendProblem.NONCE_USED),
    ("replacement transaction underpriced", SendProblem.NONCE_TAKEN),
    ("transaction already imported", SendProblem.ALREADY_KNOWN),
    ("already known", SendProblem.ALREADY_KNOWN),
    ("max fee per gas less than block base fee", SendProblem.FEE_TOO_LOW),
    ("transaction underpriced", SendProblem.FEE_TOO_LOW),
    ("insufficient funds for gas * price + value", SendProblem.NO_FUNDS),
    ("execution reverted", SendProblem.OTHER),
])
def test_node_refusals_are_told_apart(message: str, problem: str) -> None:
    assert classify_send_error(f"eth_sendRawTransaction failed: {{'code': -32003, 'message': '{message}'}}") == problem
