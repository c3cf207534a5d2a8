"""JSON-RPC over one WebSocket to the chain's node: requests and ``eth_subscribe`` notifications.

The relay follows the chain through this instead of web3's persistent-connection provider,
whose per-message formatting (checksummed addresses, HexBytes, attribute dictionaries) cost
more CPU than everything else the relay does: logs arrive here as the node's plain JSON,
which ``common.events.EventDecoder`` reads directly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from common.errors import ChainError

__all__ = ["RpcSocket"]

REQUEST_TIMEOUT = 60.0


class RpcSocket:
    """One WebSocket connection to a node; use as ``async with RpcSocket(url) as rpc``.

    When the connection drops, pending requests and ``notification`` raise ``ConnectionError``.
    """

    def __init__(self, url: str, max_size: int = 2**26) -> None:
        self.url = url
        self.max_size = max_size
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._notifications: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RpcSocket:
        self._ws = await connect(self.url, max_size=self.max_size, ping_interval=20, ping_timeout=20,
                                 compression=None, open_timeout=10)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        self._fail(ConnectionError("connection closed"))

    async def request(self, method: str, params: list[Any]) -> Any:
        """Send one request and wait for its result; ChainError when the node answers an error."""
        if self._ws is None:
            raise ConnectionError("not connected")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
            return await asyncio.wait_for(future, timeout=REQUEST_TIMEOUT)
        except ConnectionClosed as err:
            raise ConnectionError(f"the node closed the connection: {err}") from err
        finally:
            self._pending.pop(request_id, None)

    def pending_notifications(self) -> int:
        """How many notifications are waiting to be taken."""
        return self._notifications.qsize()

    async def notification(self) -> dict[str, Any]:
        """The next subscription notification's ``result`` (a log, for a logs subscription)."""
        item = await self._notifications.get()
        if item is None:
            self._notifications.put_nowait(None)  # stays closed for every later caller
            raise ConnectionError("the node's connection closed")
        return item

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if message.get("method") == "eth_subscription":
                    self._notifications.put_nowait(message["params"]["result"])
                    continue
                future = self._pending.get(message.get("id"))
                if future is None or future.done():
                    continue
                if "error" in message:
                    future.set_exception(ChainError(f"the node refused the request: {message['error']}"))
                else:
                    future.set_result(message.get("result"))
        except ConnectionClosed:
            pass
        finally:
            self._fail(ConnectionError("the node's connection closed"))

    def _fail(self, err: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(err)
        self._pending.clear()
        self._notifications.put_nowait(None)
