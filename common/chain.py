"""The one client layer to the chain: connecting, signing transactions locally, nonces, gas and
fees, retries of transient RPC failures, transactions that wait too long, and decoding the
contract's custom errors.

Transactions are signed with local keys (eth-account), never by node-unlocked accounts, so the
same code works against any JSON-RPC node. They carry EIP-1559 fees where the chain has a base
fee and a legacy gas price otherwise (``common.fees``), never above ``MAX_FEE_GWEI``.
``ChainClient`` is synchronous (scripts, tests): it signs each transaction once, so a send retried
after an RPC failure is the same transaction, looked up by hash first, and can see it through to
finality (``until="final"``, the operator's tools); ``AsyncChainClient`` is its asyncio twin for
the server, which also sees a transaction through to its block: one that waits unmined for
``TX_REPLACE_AFTER`` seconds is replaced with the same nonce at higher fees (up to the ceiling,
where it is held and the log says so), one the node dropped is sent again, and after any nonce
error the nonce is read back from the chain.

The async client never gives a nonce of its own twice: every transaction it sent and has not
seen final (the batcher says so; mined, for a caller that does not keep them) stays in its registry
by nonce, a nonce read back from the chain never goes below
them, and a gap before a waiting transaction (its predecessor dropped by the node, or removed
with replaced blocks) is filled at once by sending that predecessor again, or a no-op transfer
where the gap is none of the client's. A gateway's readings thus reach the chain in the order
their transactions were sent, whatever the node forgets.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Literal, TypeVar

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound, Web3RPCError

from common.backoff import backoff_delay
from common.deployment import Deployment
from common.errors import ChainError, ChainUnavailable, ConfigError, FeesTooHigh, NotFinal, TransactionLost
from common.fees import FEE_HISTORY_BLOCKS, Fees, SendProblem, classify_send_error, suggest_fees
from common.logs import log_event
from common.settings import GANACHE_DEV_KEYS, LOCAL_CHAIN_ID, Settings

__all__ = [
    "ChainClient",
    "Outcome",
    "AsyncChainClient",
    "SentTransaction",
    "Mined",
    "ErrorDecoder",
    "GAS_MARGIN",
    "refuse_dev_keys_off_local",
    "TRANSIENT_ERRORS",
    "LOG_CHUNK_BLOCKS",
    "logs_between",
]

log = logging.getLogger("chain")
T = TypeVar("T")
R = TypeVar("R")

#: Multiplier on estimated gas so a batch whose state moved since estimation still fits.
GAS_MARGIN = 1.25
#: Seconds fees read from the node are reused for the server's transactions (a transaction the node
#: refuses as underpriced, or one replaced, reads them afresh).
FEE_TTL = 30.0
#: The gateway's key counts as running low when its balance would pay for fewer transactions than
#: this at the current fees: a warning is logged (at most every ``FEE_TTL``) while there is time to fund it.
LOW_FUNDS_TRANSACTIONS = 200
#: A transaction behind a missing earlier nonce is given up (and what it carried sent again) after
#: this many ``TX_REPLACE_AFTER`` periods: the gap may be another transaction in flight about to fill it.
NONCE_GAP_PERIODS = 2
#: A transaction still unmined this many check periods after it was sent makes the client look why at once
#: (a gap before it, or the node forgot it), rather than only after ``TX_REPLACE_AFTER``.
LOOK_AGAIN_CHECKS = 2
#: Gas of the no-op transfer that fills a nonce gap none of the client's transactions fills.
NOOP_GAS = 21_000
#: Waits between retries of a failed RPC call: from this, doubling, up to the cap (seconds).
RPC_RETRY_FIRST, RPC_RETRY_CAP = 0.2, 5.0
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError, asyncio.TimeoutError)


#: Blocks asked for in one ``eth_getLogs`` (nodes cap the range or the size of an answer).
LOG_CHUNK_BLOCKS = 2_000
#: HTTP connections a client keeps to the node. A node answers one request at a time anyway, and
#: a burst of concurrent connections (1,000 meters logging in at once) costs it for long after:
#: a Hardhat node grew a thread per connection and spent twice the CPU per reading for minutes.
RPC_CONNECTIONS = 4


async def logs_between(request: Callable[[str, list[Any]], Awaitable[Any]], address: str, start: int, end: int,
                       topics: list[Any] | None = None) -> AsyncIterator[list[dict[str, Any]]]:
    """The contract's raw logs of blocks ``start``..``end``, a chunk of blocks at a time, in chain order.

    ``request`` is any JSON-RPC caller (``AsyncChainClient.request``, ``RpcSocket.request``).
    """
    while start <= end:
        last = min(start + LOG_CHUNK_BLOCKS - 1, end)
        query: dict[str, Any] = {"address": address, "fromBlock": hex(start), "toBlock": hex(last)}
        if topics is not None:
            query["topics"] = topics
        yield await request("eth_getLogs", [query])
        start = last + 1


def refuse_dev_keys_off_local(chain_id: int, keys: list[str]) -> None:
    """Refuse Ganache's well-known keys on any chain id but the local one."""
    if chain_id == LOCAL_CHAIN_ID:
        return
    dev = {k.lower() for k in GANACHE_DEV_KEYS}
    for key in keys:
        if key.lower() in dev:
            raise ConfigError(
                f"refusing to use Ganache's well-known development keys on chain id {chain_id}: "
                "set ADMIN_KEY, OPERATOR_KEY, GATEWAY_KEY and GRID_OPERATOR_KEY to keys of your own"
            )


class ErrorDecoder:
    """Turns revert data into ``ErrorName(arg, ...)`` using the contract's ABI."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for item in abi:
            if item.get("type") == "error":
                types = [i["type"] for i in item.get("inputs", [])]
                selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
                self._errors[selector] = (item["name"], types)

    def decode(self, data: str | bytes | None) -> str:
        """The custom error's name and arguments, or the raw data when unknown."""
        if data is None:
            return "revert"
        raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
        entry = self._errors.get(raw[:4])
        if entry is None:
            return "0x" + raw.hex()
        name, types = entry
        args = abi_decode(types, raw[4:]) if types else ()
        rendered = ", ".join("0x" + a.hex() if isinstance(a, bytes) else str(a) for a in args)
        return f"{name}({rendered})"

    def from_exception(self, err: Exception) -> str:
        """The decoded custom error carried by a web3 exception."""
        data = getattr(err, "data", None)
        if isinstance(data, dict):
            data = data.get("data") or data.get("result")
        if isinstance(data, str) and data.startswith("0x"):
            return self.decode(data)
        return str(err)


def _tx_fields(account: LocalAccount, chain_id: int, nonce: int, gas: int, fees: Fees) -> dict[str, Any]:
    return {"from": account.address, "chainId": chain_id, "nonce": nonce, "gas": gas, **fees.fields()}


def _is_nonce_error(err: Exception) -> bool:
    return classify_send_error(str(err)) in (SendProblem.NONCE_USED, SendProblem.NONCE_TAKEN)


def _fees_or_hold(fees: Fees, floor: int, ceiling: int) -> Fees:
    """``fees`` capped at ``ceiling``; FeesTooHigh when even the next block's floor is above it."""
    if floor > ceiling:
        raise FeesTooHigh(f"the chain asks at least {floor / 1e9:.3g} gwei per gas, above MAX_FEE_GWEI="
                          f"{ceiling / 1e9:g}; holding transactions until fees fall (or raise MAX_FEE_GWEI)")
    return fees.capped(ceiling)


@dataclass(frozen=True)
class _Signed:
    """A transaction signed once: every send of it, first or again, carries these very bytes (one hash, one nonce)."""

    raw: bytes
    tx_hash: str
    nonce: int
    sender: str


@dataclass(frozen=True)
class Outcome:
    """A transaction ``ChainClient.transact`` saw through: its hash, its block, and whether it was final
    (``confirmations`` blocks on top, of the ``depth`` the settings ask) when it returned."""

    tx_hash: str
    block: int
    confirmations: int
    depth: int

    @property
    def final(self) -> bool:
        """Whether its block was ``CONFIRMATIONS`` deep when ``transact`` returned."""
        return self.confirmations >= self.depth


#: Seconds between looks at the chain while a synchronous transaction waits for its block, or for finality.
POLL_SECONDS = 0.25
#: Seconds a synchronous transaction may wait for its block, and then for each block on top of it.
MINE_TIMEOUT, BLOCK_TIMEOUT = 120.0, 60.0
#: Times ``transact`` signs anew when the node says the nonce went to another transaction of the key's.
NONCE_ATTEMPTS = 4


class _NonceTaken(Exception):
    """The node refused a signed transaction's nonce, and does not know the transaction itself."""


class ChainClient:
    """Synchronous chain access with one signing key per role, as scripts and tests need it.

    ``until`` is how far ``transact`` sees a transaction by default: ``"mined"`` (its receipt) or
    ``"final"`` (its block ``CONFIRMATIONS`` deep, the receipt checked again there, the very same
    transaction sent again if a reorganisation removed it). Every transaction it returned from is in
    ``outcomes``.
    """

    def __init__(self, settings: Settings, rpc_url: str | None = None, timeout: float = 60.0,
                 until: Literal["mined", "final"] = "mined") -> None:
        self.settings = settings
        self.w3 = Web3(HTTPProvider(rpc_url or settings.chain_rpc_url, request_kwargs={"timeout": timeout}))
        self._nonces: dict[str, int] = {}
        self.decoder: ErrorDecoder | None = None
        if until not in ("mined", "final"):
            raise ValueError(f"until is 'mined' or 'final', not {until!r}")
        self.until = until
        self.outcomes: list[Outcome] = []

    def check(self) -> int:
        """Return the chain id, or raise ChainUnavailable with what to do."""
        try:
            chain_id = int(self.w3.eth.chain_id)
        except Exception as err:  # noqa: BLE001 - any failure here means "not reachable"
            raise ChainUnavailable(
                f"cannot reach the chain at {self.settings.chain_rpc_url} ({type(err).__name__}); "
                "start it with ./run-docker.sh"
            ) from err
        return chain_id

    def fees(self) -> Fees:
        """Fees for the next block, capped at ``MAX_FEE_GWEI`` (FeesTooHigh when the chain asks more)."""
        try:
            history: dict[str, Any] | None = dict(self.w3.eth.fee_history(FEE_HISTORY_BLOCKS, "latest", [50]))
        except (Web3RPCError, ValueError):
            history = None
        tip: int | None = None
        if history is not None:
            try:
                tip = int(self.w3.eth.max_priority_fee)
            except (Web3RPCError, ValueError):
                tip = None
        price = None if history else int(self.w3.eth.gas_price)
        fees, floor = suggest_fees(history, tip, price)
        return _fees_or_hold(fees, floor, self.settings.max_fee_wei)

    def contract(self, deployment: Deployment) -> Any:
        """A contract object for the recorded deployment."""
        self.decoder = ErrorDecoder(deployment.abi)
        return self.w3.eth.contract(address=Web3.to_checksum_address(deployment.address), abi=deployment.abi)

    def transact(self, key: str, call: Any, gas: int | None = None, wait: bool = True) -> Any:
        """Sign and send ``call`` (a bound contract function or a deploy constructor) with ``key``.

        Estimates gas with a margin unless ``gas`` is given; on a revert raises ChainError naming
        the custom error. The transaction is signed once: a send retried after an RPC failure asks
        the node for it by hash first and sends the very same bytes again, so it can never be
        applied twice. Returns the receipt, once mined or once final as ``until`` says (the hash
        when ``wait`` is false); NotFinal when that takes too long, TransactionLost when its nonce
        went to another transaction before it was mined.
        """
        account: LocalAccount = Account.from_key(key)
        for _ in range(NONCE_ATTEMPTS):
            signed = self._retrying(lambda: self._sign_call(account, call, gas))
            try:
                self._send(signed)
            except _NonceTaken:
                self._nonces.pop(account.address, None)
                continue
            self._nonces[account.address] = signed.nonce + 1
            if not wait:
                return HexBytes(signed.tx_hash)
            if self.until == "final":
                receipt = self._until_final(signed)
            else:
                receipt = self._until_mined(signed)
                self.outcomes.append(Outcome(signed.tx_hash, int(receipt["blockNumber"]), 0,
                                             self.settings.finality_depth))
            if receipt["status"] != 1:
                raise ChainError(f"transaction {signed.tx_hash} reverted")
            return receipt
        raise ChainError("could not agree a nonce with the node: another sender uses this key at the same time?")

    def _retrying(self, op: Callable[[], T]) -> T:
        """Run ``op``, retrying transient RPC failures with exponential back-off."""
        for attempt in range(self.settings.rpc_retry_attempts):
            try:
                return op()
            except TRANSIENT_ERRORS as err:
                log_event(log, "rpc_retry", logging.WARNING, attempt=attempt + 1, error=type(err).__name__)
                time.sleep(backoff_delay(attempt + 1, RPC_RETRY_FIRST, RPC_RETRY_CAP))
        raise ChainUnavailable(f"the chain at {self.settings.chain_rpc_url} kept failing; is it running?")

    def _sign_call(self, account: LocalAccount, call: Any, gas: int | None) -> _Signed:
        """Estimate, price and sign ``call`` with the key's next nonce (the contract's refusal as ChainError)."""
        try:
            nonce = self._nonces.get(account.address)
            if nonce is None:
                nonce = self.w3.eth.get_transaction_count(account.address, "pending")
            use_gas = int(call.estimate_gas({"from": account.address}) * GAS_MARGIN) if gas is None else gas
            tx = call.build_transaction(_tx_fields(account, self.w3.eth.chain_id, nonce, use_gas, self.fees()))
        except (ContractCustomError, ContractLogicError) as err:
            reason = self.decoder.from_exception(err) if self.decoder else str(err)
            raise ChainError(f"the contract refused the call: {reason}") from err
        except Web3RPCError as err:
            raise ChainError(f"the node refused the transaction: {err}") from err
        signed = account.sign_transaction(tx)
        return _Signed(bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex(), nonce, account.address)

    def _known(self, signed: _Signed) -> bool:
        """Whether the node has ``signed``, pending or mined."""
        try:
            self.w3.eth.get_transaction(signed.tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return False
        return True

    def _receipt(self, signed: _Signed) -> Any:
        """The receipt of ``signed`` on the node's chain, or None."""
        try:
            return self.w3.eth.get_transaction_receipt(signed.tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None

    def _send(self, signed: _Signed) -> None:
        """Send ``signed``. A send that failed in transit may have reached the node: before sending again the node
        is asked for it by hash, and the same bytes are what is sent again. _NonceTaken: the nonce is another's."""
        for attempt in range(self.settings.rpc_retry_attempts):
            try:
                if attempt and self._known(signed):
                    log_event(log, "tx_taken_before_retry", logging.WARNING, tx=signed.tx_hash, nonce=signed.nonce)
                    return
                self.w3.eth.send_raw_transaction(signed.raw)
                return
            except Web3RPCError as err:
                problem = classify_send_error(str(err))
                if problem == SendProblem.ALREADY_KNOWN:
                    return
                if problem in (SendProblem.NONCE_USED, SendProblem.NONCE_TAKEN):
                    if self._known(signed):  # mined (or pending) already: this very transaction holds the nonce
                        return
                    raise _NonceTaken() from err
                raise ChainError(f"the node refused the transaction: {err}") from err
            except TRANSIENT_ERRORS as err:
                log_event(log, "rpc_retry", logging.WARNING, attempt=attempt + 1, error=type(err).__name__,
                          tx=signed.tx_hash)
                time.sleep(backoff_delay(attempt + 1, RPC_RETRY_FIRST, RPC_RETRY_CAP))
        raise ChainUnavailable(f"the chain at {self.settings.chain_rpc_url} kept failing; is it running? "
                               f"Transaction {signed.tx_hash} (nonce {signed.nonce}) may have been sent: look it "
                               "up before sending again")

    def _until_mined(self, signed: _Signed) -> Any:
        """Wait for ``signed``'s receipt; sent again (the same bytes) when the node no longer has it."""
        deadline = time.monotonic() + MINE_TIMEOUT
        while True:
            receipt = self._retrying(lambda: self._receipt(signed))
            if receipt is not None:
                return receipt
            if not self._retrying(lambda: self._known(signed)):
                # Its block was replaced, or the node lost its pool (a restart): the very same transaction again.
                log_event(log, "tx_resent", logging.WARNING, tx=signed.tx_hash, nonce=signed.nonce,
                          reason="the node no longer has it")
                try:
                    self._send(signed)
                except _NonceTaken:
                    receipt = self._retrying(lambda: self._receipt(signed))
                    if receipt is not None:
                        return receipt
                    raise TransactionLost(f"transaction {signed.tx_hash} (nonce {signed.nonce}) was never mined: "
                                          "another transaction of the same key took its nonce; check the chain's "
                                          "state and run the command again if its change is missing") from None
            if time.monotonic() > deadline:
                raise NotFinal(f"transaction {signed.tx_hash} was sent, not yet mined after {MINE_TIMEOUT:.0f} s: "
                               "is the chain mining? Look it up by its hash before running the command again")
            time.sleep(POLL_SECONDS)

    def _until_final(self, signed: _Signed) -> Any:
        """Wait until ``signed``'s block is ``CONFIRMATIONS`` deep and its receipt is still there; after a
        reorganisation that removed it, it is mined again (the same transaction) and waited for anew."""
        depth = self.settings.finality_depth
        receipt = self._until_mined(signed)
        deadline = time.monotonic() + BLOCK_TIMEOUT * max(depth, 1)
        while True:
            block = int(receipt["blockNumber"])
            head = self._retrying(lambda: int(self.w3.eth.block_number))
            if head >= block + depth:
                again = self._retrying(lambda: self._receipt(signed))
                if again is not None and self._canonical(again):
                    if head >= int(again["blockNumber"]) + depth:
                        self.outcomes.append(Outcome(signed.tx_hash, int(again["blockNumber"]),
                                                     head - int(again["blockNumber"]), depth))
                        return again
                    receipt = again  # mined again in a later block: its own depth is waited for
                    continue
                log_event(log, "tx_reorganised_away", logging.WARNING, tx=signed.tx_hash, block=block,
                          action="a reorganisation removed its block: it is mined again before it counts")
                receipt = self._until_mined(signed)
                deadline = time.monotonic() + BLOCK_TIMEOUT * max(depth, 1)
                continue
            if time.monotonic() > deadline:
                raise NotFinal(f"transaction {signed.tx_hash} was sent and mined in block {block}, but only "
                               f"{max(head - block, 0)} of CONFIRMATIONS={depth} blocks are on top of it so far: not "
                               "final yet (is the chain producing blocks?); look it up by its hash later")
            time.sleep(POLL_SECONDS)

    def _canonical(self, receipt: Any) -> bool:
        """Whether ``receipt``'s block is the one the chain holds at its height now."""
        block = self._retrying(lambda: self.w3.eth.get_block(int(receipt["blockNumber"])))
        return bytes(block["hash"]) == bytes(receipt["blockHash"])


def _view_signatures(abi: list[dict[str, Any]]) -> dict[str, tuple[bytes, list[str], list[str]]]:
    """name -> (selector, input types, output types) for every view function of an ABI."""
    out: dict[str, tuple[bytes, list[str], list[str]]] = {}
    for item in abi:
        if item.get("type") == "function" and item.get("stateMutability") in ("view", "pure"):
            ins = [i["type"] for i in item.get("inputs", [])]
            outs = [o["type"] for o in item.get("outputs", [])]
            out[item["name"]] = (keccak(text=f"{item['name']}({','.join(ins)})")[:4], ins, outs)
    return out


async def _retry(settings: Settings, what: str, op: Callable[[], Awaitable[T]]) -> T:
    """Run ``op``, retrying transient RPC failures with exponential back-off."""
    for attempt in range(settings.rpc_retry_attempts):
        try:
            return await op()
        except TRANSIENT_ERRORS as err:
            log_event(log, "rpc_retry", logging.WARNING, op=what, attempt=attempt + 1, error=type(err).__name__)
            await asyncio.sleep(backoff_delay(attempt + 1, RPC_RETRY_FIRST, RPC_RETRY_CAP))
    raise ChainUnavailable(f"the chain at {settings.chain_rpc_url} kept failing ({what}); is it running?")


@dataclass
class SentTransaction:
    """A transaction the client sent and sees through to its block: every version sent, newest last.

    Replacing it (same nonce, higher fees) adds a version; whichever is mined settles it.
    """

    nonce: int
    data: bytes
    gas: int
    fees: Fees
    hashes: list[str]
    #: ``time.monotonic()`` when the newest version was sent (or the wait last started again).
    sent_at: float
    #: When it was first sent (a transaction stuck behind a missing nonce is given up after a while).
    first_sent_at: float
    #: Whether it waits at the fee ceiling (said once in the log).
    held: bool = False

    @property
    def hash(self) -> str:
        """The newest version's hash."""
        return self.hashes[-1]


@dataclass(frozen=True)
class Mined(Generic[R]):
    """How a transaction was found mined: by the caller's own report (``report``), or else its ``receipt``."""

    tx_hash: str
    report: R | None = None
    receipt: dict[str, Any] | None = None


class AsyncChainClient:
    """The asyncio twin of ChainClient for the server: one key, local nonce management, and
    transactions seen through to their block (replaced when they wait, sent again when dropped)."""

    def __init__(self, settings: Settings, deployment: Deployment, key: str) -> None:
        self.settings = settings
        self.deployment = deployment
        self.account: LocalAccount = Account.from_key(key)
        self.w3 = AsyncWeb3(AsyncHTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 60}))
        self.contract = self.w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(deployment.address), abi=deployment.abi
        )
        self.decoder = ErrorDecoder(deployment.abi)
        self._nonce: int | None = None
        #: (fees, the next block's floor, when read)
        self._fees: tuple[Fees, int, float] | None = None
        self._lock = asyncio.Lock()
        self._views = _view_signatures(deployment.abi)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        #: Transactions sent and not yet seen mined, by nonce: their nonces are never given again.
        self._in_flight: dict[int, SentTransaction] = {}
        self.replaced = 0
        self.resent = 0
        #: Nonce gaps filled: by sending a transaction of ours again, or with a no-op transfer.
        self.gaps_filled = 0

    async def close(self) -> None:
        """Close the HTTP sessions."""
        if self._session is not None:
            await self._session.close()
        await self.w3.provider.disconnect()

    async def view(self, name: str, *args: Any, block: int | str = "latest") -> tuple[Any, ...]:
        """Call a view function with a raw ``eth_call`` on a kept-alive connection (the hot path).

        Skips web3's per-call machinery, which costs milliseconds of CPU per call: the gateway
        reads a meter's state at every login. ``block`` reads the state as of an earlier block.
        """
        selector, in_types, out_types = self._views[name]
        data = "0x" + (selector + abi_encode(in_types, list(args))).hex()
        params = [{"to": self.deployment.address, "data": data}, hex(block) if isinstance(block, int) else block]
        result = await self.request("eth_call", params)
        return tuple(abi_decode(out_types, bytes.fromhex(result.removeprefix("0x"))))

    async def request(self, method: str, params: list[Any]) -> Any:
        """A raw JSON-RPC call on the kept-alive connection, retrying transient failures."""
        return await _retry(self.settings, method, lambda: self._rpc(method, params))

    async def _rpc(self, method: str, params: list[Any]) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                                  connector=aiohttp.TCPConnector(limit=RPC_CONNECTIONS))
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            async with self._session.post(self.settings.chain_rpc_url, json=body) as resp:
                reply = await resp.json(content_type=None)
        except aiohttp.ClientError as err:
            raise ConnectionError(str(err)) from err
        if "error" in reply:
            error = reply["error"]
            data = error.get("data")
            if isinstance(data, dict):
                data = data.get("result") or data.get("data")
            detail = self.decoder.decode(data) if isinstance(data, str) and data.startswith("0x") else error
            raise ChainError(f"{method} failed: {detail}")
        return reply["result"]

    async def call(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run a read-only RPC with retries."""
        return await _retry(self.settings, what, op)

    # ---------------------------------------------------------------- fees

    async def fees(self, fresh: bool = False, gas: int = 0) -> Fees:
        """Fees for the next block, capped at ``MAX_FEE_GWEI``; FeesTooHigh when the chain asks more than that.

        Read from the node at most every ``FEE_TTL`` seconds (or now, if ``fresh``); each reading
        also checks the key's balance against ``gas`` at these fees (see ``LOW_FUNDS_TRANSACTIONS``).
        """
        fees, floor = await self._suggested(fresh, gas)
        return _fees_or_hold(fees, floor, self.settings.max_fee_wei)

    async def _suggested(self, fresh: bool, gas: int = 0) -> tuple[Fees, int]:
        """The node's fees for the next block (uncapped) and the lowest max fee that block accepts."""
        now = time.monotonic()
        if fresh or self._fees is None or now - self._fees[2] > FEE_TTL:
            try:
                history = await self.request("eth_feeHistory", [hex(FEE_HISTORY_BLOCKS), "latest", [50]])
            except ChainError as err:
                if isinstance(err, ChainUnavailable):
                    raise
                history = None  # a node without EIP-1559 fee history: a legacy gas price
            tip = price = None
            if history and (history.get("baseFeePerGas") or []):
                try:
                    tip = int(await self.request("eth_maxPriorityFeePerGas", []), 16)
                except ChainError as err:
                    if isinstance(err, ChainUnavailable):
                        raise
            else:
                price = int(await self.request("eth_gasPrice", []), 16)
            fees, floor = suggest_fees(history, tip, price)
            self._fees = (fees, floor, now)
            if gas:
                await self._check_funds(fees, gas)
        return self._fees[0], self._fees[1]

    async def _check_funds(self, fees: Fees, gas: int) -> None:
        """Warn while the key's balance would pay for fewer than ``LOW_FUNDS_TRANSACTIONS`` transactions."""
        balance = int(await self.request("eth_getBalance", [self.account.address, "latest"]), 16)
        per_tx = gas * fees.max_fee
        if balance < LOW_FUNDS_TRANSACTIONS * per_tx:
            log_event(log, "gateway_funds_low", logging.WARNING, account=self.account.address,
                      balance_eth=f"{balance / 1e18:.6g}", transactions_left=balance // max(per_tx, 1),
                      action=f"send funds to {self.account.address}: transactions fail once it cannot pay for gas")

    # ---------------------------------------------------------------- sending

    def forget_nonce(self) -> None:
        """Read the nonce from the chain before the next transaction (never below one still in flight)."""
        self._nonce = None

    def register(self, tx: SentTransaction) -> None:
        """Count ``tx`` as in flight: its nonce is not given again, and a gap at it is filled by sending it again."""
        self._in_flight[tx.nonce] = tx

    def settled(self, tx: SentTransaction) -> None:
        """``tx`` was seen mined (or given up): it leaves the registry."""
        if self._in_flight.get(tx.nonce) is tx:
            del self._in_flight[tx.nonce]

    def in_flight(self) -> list[SentTransaction]:
        """The transactions sent and not yet seen mined, in nonce order."""
        return [self._in_flight[n] for n in sorted(self._in_flight)]

    async def _next_nonce(self) -> int:
        if self._nonce is None:
            pending = int(await self.request("eth_getTransactionCount", [self.account.address, "pending"]), 16)
            self._nonce = max(pending, max(self._in_flight, default=-1) + 1)
        return self._nonce

    async def _nonce_mined(self) -> int:
        """How many of the key's transactions are mined (the next nonce the chain expects)."""
        return int(await self.request("eth_getTransactionCount", [self.account.address, "latest"]), 16)

    def _sign(self, data: bytes, gas: int, nonce: int, fees: Fees) -> tuple[str, str]:
        """(raw 0x transaction, 0x hash) of a call of the contract."""
        tx: dict[str, Any] = {"to": self.deployment.address, "data": data, "value": 0, "gas": gas, "nonce": nonce,
                              "chainId": self.settings.chain_id, **fees.fields()}
        signed = self.account.sign_transaction(tx)
        return "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()

    async def send_transaction(self, data: bytes, gas: int) -> SentTransaction:
        """Sign a call of the contract with ``data`` as calldata and send it.

        Built and signed here without web3's contract machinery (which spends about a millisecond
        per reading validating and encoding a batch); transient failures are retried and a nonce
        the node disagrees with is read back from the chain. Transactions go out one at a time, in
        nonce order: a node that mines on arrival (Ganache's instamine) can stall for the length of
        the request timeout when a later nonce reaches it first. A caller with the next transaction
        ready waits here and sends it the moment the previous one is accepted. Raises FeesTooHigh
        (nothing sent) while the chain asks more than ``MAX_FEE_GWEI``.
        """
        async with self._lock:
            fresh = False
            for _ in range(4):
                fees = await self.fees(fresh=fresh, gas=gas)
                nonce = await self._next_nonce()
                try:
                    raw, tx_hash = self._sign(data, gas, nonce, fees)
                    await self.request("eth_sendRawTransaction", [raw])
                except ChainError as err:  # ChainUnavailable too: the nonce is read again either way
                    problem = classify_send_error(str(err))
                    if problem == SendProblem.ALREADY_KNOWN:  # a retried send the node had taken the first time
                        self._nonce = nonce + 1
                        return self._sent(nonce, data, gas, fees, tx_hash)
                    self._nonce = None
                    if problem in (SendProblem.NONCE_USED, SendProblem.NONCE_TAKEN):
                        continue
                    if problem == SendProblem.FEE_TOO_LOW:
                        fresh = True
                        continue
                    if problem == SendProblem.NO_FUNDS:
                        log_event(log, "gateway_out_of_funds", logging.ERROR, account=self.account.address,
                                  action=f"send funds to {self.account.address}; readings wait in the queue")
                        raise ChainError(f"the gateway's account {self.account.address} cannot pay for gas; "
                                         "fund it (its readings wait in the queue)") from err
                    raise
                self._nonce = nonce + 1
                return self._sent(nonce, data, gas, fees, tx_hash)
            raise ChainError("could not agree a nonce and fees with the node")

    def _sent(self, nonce: int, data: bytes, gas: int, fees: Fees, tx_hash: str) -> SentTransaction:
        """A transaction the node took, registered as in flight."""
        now = time.monotonic()
        tx = SentTransaction(nonce, data, gas, fees, [tx_hash], now, now)
        self.register(tx)
        return tx

    async def until_mined(self, tx: SentTransaction,
                          reported: Callable[[list[str], float], Awaitable[tuple[str, R] | None]],
                          check_every: float = 2.0, keep: bool = False) -> Mined[R]:
        """Wait until a version of ``tx`` is mined, replacing it while it waits; how it was found.

        ``reported(hashes, timeout)`` is the caller's own way to hear of it (the relay reads every
        block's logs anyway), waited on for ``check_every`` seconds at a time; between waits the
        receipt is asked for. A transaction unmined after ``TX_REPLACE_AFTER`` seconds is
        replaced with the same nonce at higher fees, or sent again if the node dropped it; at the
        fee ceiling it is held (and the log says so). Raises TransactionLost when it can never be
        mined (its nonce went to another transaction, or an earlier nonce stayed missing). A few checks
        after sending, a gap before it is filled and a forgotten one sent again (``_look_again``).
        With ``keep`` the transaction stays registered once mined, until the caller says it is final
        (``settled``): should its block be replaced, a gap at its nonce is filled with it, never with another.
        """
        replace_after = self.settings.tx_replace_after
        look_every = LOOK_AGAIN_CHECKS * check_every
        looked_at = tx.sent_at
        self.register(tx)
        found = False
        try:
            while True:
                wait = max(0.05, min(check_every, tx.sent_at + replace_after - time.monotonic()))
                report = await reported(list(tx.hashes), wait)
                if report is not None:
                    found = True
                    return Mined(report[0], report=report[1])
                receipt = await self._receipt_of(tx)
                if receipt is not None:
                    found = True
                    return Mined(str(receipt["transactionHash"]).lower(), receipt=receipt)
                now = time.monotonic()
                if now - tx.sent_at >= replace_after:
                    receipt = await self._unstick(tx)
                    looked_at = now
                elif now - max(looked_at, tx.sent_at) >= look_every:
                    receipt = await self._look_again(tx)
                    looked_at = now
                if receipt is not None:
                    found = True
                    return Mined(str(receipt["transactionHash"]).lower(), receipt=receipt)
        finally:
            if not (found and keep):
                self.settled(tx)

    async def _receipt_of(self, tx: SentTransaction) -> dict[str, Any] | None:
        """The receipt of whichever version of ``tx`` was mined, if any (newest asked first)."""
        for tx_hash in reversed(tx.hashes):
            receipt = await self.request("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return receipt  # type: ignore[no-any-return]
        return None

    async def _look_again(self, tx: SentTransaction) -> dict[str, Any] | None:
        """``tx`` is not mined a few checks after it was sent: fill a nonce gap before it, send it again if the
        node forgot it (returns a receipt if it turns out mined). Fees are left to ``_unstick``."""
        mined = await self._nonce_mined()
        if mined > tx.nonce:
            return await self._mined_or_lost(tx)
        if mined < tx.nonce:
            await self._fill_gap(mined, tx.nonce, noop=False)
            return None
        suggested = await self._resend_fees()
        if suggested is not None and await self._send_again_if_forgotten(tx, suggested):
            log_event(log, "tx_resent", logging.WARNING, nonce=tx.nonce, tx=tx.hash,
                      reason="the node no longer has it (dropped from its pool, or its block was replaced)")
            self.resent += 1
        return None

    async def _resend_fees(self) -> Fees | None:
        """The fees the chain asks now, for sending a transaction again; None while its next block's floor is above
        ``MAX_FEE_GWEI`` (nothing can be mined at the fees allowed: the fee hold says so)."""
        suggested, floor = await self._suggested(fresh=True)
        return None if floor > self.settings.max_fee_wei else suggested

    async def _send_again_if_forgotten(self, tx: SentTransaction, suggested: Fees) -> bool:
        """Send ``tx`` again, at ``suggested`` fees if higher than its own, when the node no longer has it (dropped
        from its pool, or gone with replaced blocks); returns whether it was sent. Its replacement clock stays."""
        if await self.request("eth_getTransactionByHash", [tx.hash]) is not None:
            return False
        await self._resend(tx, tx.fees.at_least(suggested).capped(self.settings.max_fee_wei), restart=False)
        return True

    async def _mined_or_lost(self, tx: SentTransaction) -> dict[str, Any]:
        """The chain is past ``tx``'s nonce: its receipt, or TransactionLost if another transaction took it."""
        receipt = await self._receipt_of(tx)  # mined a moment ago, or the nonce went to another transaction
        if receipt is None:
            self.forget_nonce()
            raise TransactionLost(f"transaction {tx.hash} (nonce {tx.nonce}) was never mined: another "
                                  "transaction of the gateway's key took its nonce (is the key used elsewhere?)")
        return receipt

    async def _fill_gap(self, first: int, end: int, noop: bool) -> None:
        """Nonces ``first`` to ``end - 1`` are not mined and hold up a later transaction: send ours again at once
        (the node dropped them, or they went with replaced blocks), and, with ``noop``, a no-op transfer where
        none of ours is (only once the wait is long: the word of a replaced block may still be on its way)."""
        suggested = await self._resend_fees()
        if suggested is None:
            return
        for nonce in range(first, end):
            ours = self._in_flight.get(nonce)
            if ours is not None:
                if not await self._send_again_if_forgotten(ours, suggested):
                    continue  # the node has it: it will be mined in turn
                filler = "sent_again"
            elif noop:
                await self._send_noop(nonce, suggested.capped(self.settings.max_fee_wei))
                filler = "noop"
            else:
                continue
            self.gaps_filled += 1
            log_event(log, "nonce_gap_filled", logging.WARNING, nonce=nonce, filler=filler,
                      waiting=end, reason="an earlier nonce was missing (dropped by the node or removed with "
                                          "replaced blocks)")

    async def _send_noop(self, nonce: int, fees: Fees) -> None:
        """Send a zero-value transfer to the key itself with ``nonce`` (fills a gap that carries nothing of ours)."""
        tx: dict[str, Any] = {"to": self.account.address, "value": 0, "gas": NOOP_GAS, "nonce": nonce,
                              "chainId": self.settings.chain_id, **fees.bumped().fields()}
        signed = self.account.sign_transaction(tx)
        try:
            await self.request("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
        except ChainError as err:
            if classify_send_error(str(err)) not in (SendProblem.NONCE_USED, SendProblem.ALREADY_KNOWN,
                                                     SendProblem.NONCE_TAKEN):
                raise

    async def rebuild(self, tx_hash: str) -> SentTransaction | None:
        """One of the key's transactions as the chain holds it (to send again should its block be replaced); None if
        the node does not know it or it is not the key's."""
        found = await self.request("eth_getTransactionByHash", [tx_hash])
        if found is None or str(found.get("from", "")).lower() != self.account.address.lower():
            return None
        if found.get("maxFeePerGas") is not None:
            fees = Fees(int(found["maxFeePerGas"], 16), int(found.get("maxPriorityFeePerGas") or "0x0", 16))
        else:
            fees = Fees(int(found["gasPrice"], 16))
        data = bytes.fromhex(str(found.get("input") or found.get("data") or "0x").removeprefix("0x"))
        now = time.monotonic()
        return SentTransaction(int(found["nonce"], 16), data, int(found["gas"], 16), fees, [tx_hash.lower()], now, now)

    async def clear_pending(self, timeout: float) -> int:
        """Before a start sends anything: wait up to ``timeout`` seconds for the key's pending transactions (a
        previous run's) to be mined, then cancel any left with no-op transfers at higher fees, so that nothing
        sent before can be mined after what this run sends. Returns how many were cancelled."""
        deadline = time.monotonic() + timeout
        while True:
            mined = await self._nonce_mined()
            pending = int(await self.request("eth_getTransactionCount", [self.account.address, "pending"]), 16)
            if pending <= mined:
                return 0
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        suggested, _ = await self._suggested(fresh=True)
        fees = Fees(suggested.max_fee * 2, None if suggested.priority_fee is None else suggested.priority_fee * 2)
        for nonce in range(mined, pending):
            await self._send_noop(nonce, fees.capped(self.settings.max_fee_wei))
        log_event(log, "previous_transactions_cancelled", logging.WARNING, first_nonce=mined, count=pending - mined,
                  reason=f"still pending {timeout:.0f} s after the start: what they carried is queued and sent anew")
        self._nonce = None
        return pending - mined

    async def rebroadcast(self) -> int:
        """Send every transaction in flight again that the node no longer has, in nonce order (after blocks were
        replaced: a node may drop the pool's transactions behind the vanished ones); returns how many."""
        if not self._in_flight:
            return 0
        suggested = await self._resend_fees()
        if suggested is None:
            return 0
        return sum([await self._send_again_if_forgotten(tx, suggested) for tx in self.in_flight()])

    async def _unstick(self, tx: SentTransaction) -> dict[str, Any] | None:
        """``tx`` waited too long: find out why and act (returns a receipt if it turns out mined)."""
        mined = await self._nonce_mined()
        if mined > tx.nonce:
            return await self._mined_or_lost(tx)
        if mined < tx.nonce:
            # An earlier nonce is missing (its transaction vanished with replaced blocks, or was dropped): this one
            # waits behind it, and the gap is filled. If it stays open all the same, give up.
            await self._fill_gap(mined, tx.nonce, noop=True)
            if time.monotonic() - tx.first_sent_at >= NONCE_GAP_PERIODS * self.settings.tx_replace_after:
                self.forget_nonce()
                raise TransactionLost(f"transaction {tx.hash} (nonce {tx.nonce}) waits behind nonce {mined}, "
                                      "which nothing fills")
            tx.sent_at = time.monotonic()
            return None
        known = await self.request("eth_getTransactionByHash", [tx.hash])
        suggested, floor = await self._suggested(fresh=True)
        ceiling = self.settings.max_fee_wei
        if known is None:
            # Dropped from the node's pool (evicted when the base fee rose past its max fee, or lost with a
            # node's restart): sent again, at the fees the chain asks now if it can be at all.
            if floor > ceiling:
                self._hold(tx, suggested)
                return None
            fees = tx.fees.at_least(suggested).capped(ceiling)
            log_event(log, "tx_resent", logging.WARNING, nonce=tx.nonce, tx=tx.hash,
                      reason="the node no longer has it (dropped from its pool)", fees_gwei=fees.gwei())
            self.resent += 1
        else:
            needed = tx.fees.bumped()  # the least a node takes to replace it
            fees = needed.at_least(suggested).capped(ceiling)
            if fees.max_fee < needed.max_fee or (fees.priority_fee or 0) < (needed.priority_fee or 0):
                self._hold(tx, suggested)
                return None
            log_event(log, "tx_replaced", logging.WARNING, nonce=tx.nonce, old=tx.hash,
                      waited_s=int(time.monotonic() - tx.sent_at), old_fees_gwei=tx.fees.gwei(), fees_gwei=fees.gwei())
            self.replaced += 1
        tx.held = False
        await self._resend(tx, fees)
        return None

    async def send_again(self, tx: SentTransaction) -> None:
        """Send ``tx`` again with its own nonce, as it was or at the fees the chain asks now if higher (its block
        was replaced, and the node forgot it); its wait starts anew."""
        suggested, _ = await self._suggested(fresh=True)
        tx.first_sent_at = time.monotonic()
        self.register(tx)
        await self._resend(tx, tx.fees.at_least(suggested).capped(self.settings.max_fee_wei))

    def _hold(self, tx: SentTransaction, suggested: Fees) -> None:
        """Leave ``tx`` as it is: replacing it would pass ``MAX_FEE_GWEI`` (said once in the log)."""
        if not tx.held:
            log_event(log, "tx_held_at_fee_ceiling", logging.WARNING, nonce=tx.nonce, tx=tx.hash,
                      fees_gwei=tx.fees.gwei(), chain_asks_gwei=suggested.gwei(),
                      max_fee_gwei=self.settings.max_fee_gwei,
                      action="the batch waits until the chain's fees fall (or raise MAX_FEE_GWEI)")
            tx.held = True
        tx.sent_at = time.monotonic()

    async def _resend(self, tx: SentTransaction, fees: Fees, restart: bool = True) -> None:
        """Send ``tx`` again with ``fees`` (a new version when they differ) and start its wait again (unless
        ``restart`` is False: a resend to fill a gap leaves the fee replacement's clock alone)."""
        raw, tx_hash = self._sign(tx.data, tx.gas, tx.nonce, fees)
        try:
            await self.request("eth_sendRawTransaction", [raw])
        except ChainError as err:
            problem = classify_send_error(str(err))
            if problem == SendProblem.NONCE_USED:
                return  # a version was mined meanwhile: the next look finds its receipt (or the nonce gone)
            if problem not in (SendProblem.ALREADY_KNOWN, SendProblem.NONCE_TAKEN, SendProblem.FEE_TOO_LOW):
                raise
        if tx_hash not in tx.hashes:
            tx.hashes.append(tx_hash)
        tx.fees = fees
        if restart:
            tx.sent_at = time.monotonic()

    async def wait_receipt(self, tx_hash: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for a transaction's receipt (the node's JSON: numbers as 0x-hex)."""
        deadline = time.monotonic() + timeout
        delay = 0.0
        while True:
            receipt = await self.request("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return receipt  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise ChainUnavailable(f"no receipt for {tx_hash} after {timeout:.0f} s; is the chain mining?")
            delay = min(0.01 + delay * 2, 0.1)
            await asyncio.sleep(delay)
