"""What the gateway offers to pay per gas: EIP-1559 fees where the chain has a base fee, a legacy
gas price otherwise, and the rules for raising them to replace a transaction that waits.

Pure functions over the node's answers (``eth_feeHistory``, ``eth_maxPriorityFeePerGas``,
``eth_gasPrice``); ``common.chain`` asks the node and signs with the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Fees", "suggest_fees", "REPLACEMENT_BUMP", "FEE_HISTORY_BLOCKS", "SendProblem", "classify_send_error"]

#: A replacement offers this much more on both fee fields: nodes refuse one below +10% (geth's
#: ``txpool.pricebump``), and a little more leaves room for rounding.
REPLACEMENT_BUMP = 1.125
#: Blocks of ``eth_feeHistory`` the priority fee is taken from (the median of their median tips).
FEE_HISTORY_BLOCKS = 10
#: Headroom on the next block's base fee: twice it stays includable through six full blocks in a row
#: (each raises the base fee by at most 12.5%), the usual wallet rule.
BASE_FEE_HEADROOM = 2


@dataclass(frozen=True)
class Fees:
    """Wei per gas: EIP-1559 ``max_fee`` and ``priority_fee``, or a legacy gas price (``priority_fee`` None)."""

    max_fee: int
    priority_fee: int | None = None

    @property
    def legacy(self) -> bool:
        """Whether this is a legacy gas price."""
        return self.priority_fee is None

    def fields(self) -> dict[str, int]:
        """The transaction fields that carry these fees."""
        if self.priority_fee is None:
            return {"gasPrice": self.max_fee}
        return {"maxFeePerGas": self.max_fee, "maxPriorityFeePerGas": self.priority_fee}

    def bumped(self) -> Fees:
        """Fees a node accepts to replace a transaction sent with these: both fields up by ``REPLACEMENT_BUMP``."""
        tip = None if self.priority_fee is None else _bump(self.priority_fee)
        return Fees(_bump(self.max_fee), tip)

    def at_least(self, other: Fees) -> Fees:
        """The higher of each field (a replacement never offers less than the node now asks)."""
        if self.legacy or other.legacy:
            return Fees(max(self.max_fee, other.max_fee), None)
        assert self.priority_fee is not None and other.priority_fee is not None
        return Fees(max(self.max_fee, other.max_fee), max(self.priority_fee, other.priority_fee))

    def capped(self, ceiling: int) -> Fees:
        """These fees with the max fee (and tip) no higher than ``ceiling``."""
        tip = None if self.priority_fee is None else min(self.priority_fee, ceiling)
        return Fees(min(self.max_fee, ceiling), tip)

    def gwei(self) -> str:
        """For logs: ``max 2.1 tip 1.0`` gwei, or ``price 2.0``."""
        if self.priority_fee is None:
            return f"price {self.max_fee / 1e9:.3g}"
        return f"max {self.max_fee / 1e9:.3g} tip {self.priority_fee / 1e9:.3g}"


def _bump(value: int) -> int:
    return max(value + 1, -(-value * int(REPLACEMENT_BUMP * 1000) // 1000))


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def suggest_fees(history: dict[str, Any] | None, node_tip: int | None, gas_price: int | None) -> tuple[Fees, int]:
    """Fees for the next block, and the lowest max fee that block accepts (its base fee, or the gas price).

    ``history`` is ``eth_feeHistory(FEE_HISTORY_BLOCKS, "latest", [50])`` (None where the node has
    no such method); ``node_tip`` the node's ``eth_maxPriorityFeePerGas`` (None where unanswered);
    ``gas_price`` its ``eth_gasPrice``. A chain without base fees gets a legacy gas price.
    """
    base_fees = (history or {}).get("baseFeePerGas") or []
    if base_fees and _int(base_fees[-1]) > 0:
        next_base = _int(base_fees[-1])
        tips = sorted(_int(row[0]) for row in (history or {}).get("reward") or [] if row and _int(row[0]) > 0)
        tip = max(tips[len(tips) // 2] if tips else 0, node_tip or 0)
        if tip == 0:
            tip = min(next_base, 10**9)  # a node that suggests nothing: 1 gwei, or the base fee when lower
        return Fees(BASE_FEE_HEADROOM * next_base + tip, tip), next_base + tip
    if gas_price is None:
        raise ValueError("the node gave neither a base fee nor a gas price")
    return Fees(gas_price, None), gas_price


class SendProblem:
    """Why a node refused ``eth_sendRawTransaction``, from its message (nodes word these alike)."""

    NONCE_USED = "nonce_used"  # nonce too low: a transaction with this nonce is mined
    NONCE_TAKEN = "nonce_taken"  # a pending transaction of ours holds this nonce at a fee at least as high
    ALREADY_KNOWN = "already_known"  # this very transaction is in the pool already
    FEE_TOO_LOW = "fee_too_low"  # below the base fee or the node's minimum
    NO_FUNDS = "no_funds"
    OTHER = "other"


def classify_send_error(message: str) -> str:
    """The ``SendProblem`` a node's refusal describes."""
    text = message.lower()
    if "insufficient funds" in text:
        return SendProblem.NO_FUNDS
    if "already known" in text or "already imported" in text or "known transaction" in text:
        return SendProblem.ALREADY_KNOWN
    if "replacement" in text and "underpriced" in text:
        return SendProblem.NONCE_TAKEN
    if "nonce" in text and any(w in text for w in ("too low", "already", "incorrect", "correct nonce")):
        return SendProblem.NONCE_USED
    if "base fee" in text or "underpriced" in text or "fee cap" in text or "gas price too low" in text:
        return SendProblem.FEE_TOO_LOW
    return SendProblem.OTHER
