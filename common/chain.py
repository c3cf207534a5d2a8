"""The one client layer to the chain: connecting, signing transactions locally, nonces, gas,
retries of transient RPC failures and decoding the contract's custom errors.

Transactions are signed with local keys (eth-account), never by node-unlocked accounts, so the
same code works against any JSON-RPC node. ``ChainClient`` is synchronous (scripts, tests);
``AsyncChainClient`` is its asyncio twin for the server. Both share the pure helpers here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from common.backoff import backoff_delay
from common.deployment import Deployment
from common.errors import ChainError, ChainUnavailable, ConfigError
from common.logs import log_event
from common.settings import GANACHE_DEV_KEYS, LOCAL_CHAIN_ID, Settings

__all__ = [
    "ChainClient",
    "AsyncChainClient",
    "ErrorDecoder",
    "GAS_MARGIN",
    "refuse_dev_keys_off_local",
    "TRANSIENT_ERRORS",
    "LOG_CHUNK_BLOCKS",
    "logs_between",
]

log = logging.getLogger("chain")
T = TypeVar("T")

#: Multiplier on estimated gas so a batch whose state moved since estimation still fits.
GAS_MARGIN = 1.25
#: Seconds a gas price read from the node is reused for the server's transactions.
GAS_PRICE_TTL = 30.0
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


def _tx_fields(account: LocalAccount, chain_id: int, nonce: int, gas: int, gas_price: int) -> dict[str, Any]:
    return {"from": account.address, "chainId": chain_id, "nonce": nonce, "gas": gas, "gasPrice": gas_price}


def _is_nonce_error(err: Exception) -> bool:
    text = str(err).lower()
    return "nonce" in text and any(w in text for w in ("too low", "already", "incorrect", "correct nonce"))


class ChainClient:
    """Synchronous chain access with one signing key per role, as scripts and tests need it."""

    def __init__(self, settings: Settings, rpc_url: str | None = None, timeout: float = 60.0) -> None:
        self.settings = settings
        self.w3 = Web3(HTTPProvider(rpc_url or settings.chain_rpc_url, request_kwargs={"timeout": timeout}))
        self._nonces: dict[str, int] = {}
        self.decoder: ErrorDecoder | None = None

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

    def contract(self, deployment: Deployment) -> Any:
        """A contract object for the recorded deployment."""
        self.decoder = ErrorDecoder(deployment.abi)
        return self.w3.eth.contract(address=Web3.to_checksum_address(deployment.address), abi=deployment.abi)

    def transact(self, key: str, call: Any, gas: int | None = None, wait: bool = True) -> Any:
        """Sign and send ``call`` (a bound contract function or a deploy constructor) with ``key``.

        Estimates gas with a margin unless ``gas`` is given; on a revert raises ChainError
        naming the custom error. Returns the receipt (or the hash when ``wait`` is false).
        """
        account: LocalAccount = Account.from_key(key)
        for attempt in range(self.settings.rpc_retry_attempts):
            try:
                nonce = self._nonces.get(account.address)
                if nonce is None:
                    nonce = self.w3.eth.get_transaction_count(account.address, "pending")
                if gas is None:
                    estimated = call.estimate_gas({"from": account.address})
                    use_gas = int(estimated * GAS_MARGIN)
                else:
                    use_gas = gas
                tx = call.build_transaction(
                    _tx_fields(account, self.w3.eth.chain_id, nonce, use_gas, self.w3.eth.gas_price)
                )
                signed = account.sign_transaction(tx)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                self._nonces[account.address] = nonce + 1
                if not wait:
                    return tx_hash
                receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
                if receipt["status"] != 1:
                    raise ChainError(f"transaction {tx_hash.hex()} reverted")
                return receipt
            except (ContractCustomError, ContractLogicError) as err:
                reason = self.decoder.from_exception(err) if self.decoder else str(err)
                raise ChainError(f"the contract refused the call: {reason}") from err
            except Web3RPCError as err:
                if _is_nonce_error(err):
                    self._nonces.pop(account.address, None)
                    continue
                raise ChainError(f"the node refused the transaction: {err}") from err
            except TRANSIENT_ERRORS as err:
                self._nonces.pop(account.address, None)
                log_event(log, "rpc_retry", logging.WARNING, attempt=attempt + 1, error=type(err).__name__)
                time.sleep(backoff_delay(attempt + 1, RPC_RETRY_FIRST, RPC_RETRY_CAP))
        raise ChainUnavailable(f"the chain at {self.settings.chain_rpc_url} kept failing; is it running?")


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


class AsyncChainClient:
    """The asyncio twin of ChainClient for the server: one key, local nonce management."""

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
        self._gas_price: tuple[int, float] | None = None
        self._lock = asyncio.Lock()
        self._views = _view_signatures(deployment.abi)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def close(self) -> None:
        """Close the HTTP sessions."""
        if self._session is not None:
            await self._session.close()
        await self.w3.provider.disconnect()

    async def view(self, name: str, *args: Any) -> tuple[Any, ...]:
        """Call a view function with a raw ``eth_call`` on a kept-alive connection (the hot path).

        Skips web3's per-call machinery, which costs milliseconds of CPU per call: the gateway
        reads a meter's state at every login.
        """
        selector, in_types, out_types = self._views[name]
        data = "0x" + (selector + abi_encode(in_types, list(args))).hex()
        params = [{"to": self.deployment.address, "data": data}, "latest"]
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

    async def send_transaction(self, data: bytes, gas: int) -> str:
        """Sign a call of the contract with ``data`` as calldata and send it; returns the 0x tx hash.

        Built and signed here without web3's contract machinery (which spends about a millisecond
        per reading validating and encoding a batch); transient failures are retried and a nonce
        the node disagrees with is fetched again. Transactions go out one at a time, in nonce order:
        a node that mines on arrival (Ganache's instamine) can stall for the length of the request
        timeout when a later nonce reaches it first. A caller with the next transaction ready waits
        here and sends it the moment the previous one is accepted.
        """
        async with self._lock:
            for _ in range(3):
                try:
                    if self._nonce is None:
                        self._nonce = int(await self.request("eth_getTransactionCount",
                                                             [self.account.address, "pending"]), 16)
                    now = time.monotonic()
                    if self._gas_price is None or now - self._gas_price[1] > GAS_PRICE_TTL:
                        self._gas_price = (int(await self.request("eth_gasPrice", []), 16), now)
                    tx: dict[str, Any] = {"to": self.deployment.address, "data": data, "value": 0, "gas": gas,
                          "gasPrice": self._gas_price[0], "nonce": self._nonce, "chainId": self.settings.chain_id}
                    raw = "0x" + bytes(self.account.sign_transaction(tx).raw_transaction).hex()
                    tx_hash = str(await self.request("eth_sendRawTransaction", [raw]))
                    self._nonce += 1
                    return tx_hash
                except ChainError as err:  # ChainUnavailable too: the nonce is fetched again either way
                    self._nonce = None
                    if _is_nonce_error(err):
                        continue
                    raise
            raise ChainError("could not agree a nonce with the node")

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
