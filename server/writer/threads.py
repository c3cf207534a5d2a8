"""Runs a part of the server in a thread of its own, with its own event loop.

The server's loop is busy with meter traffic under load (a burst of readings from many
connections holds it for a second and more); the chain-facing parts (the batcher's senders, the
relay's log reader) would wait behind it and leave the chain idle. In a thread of their own the
GIL hands them their turn within milliseconds. What they need from the server's loop they hand
over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["run_in_own_thread"]


async def run_in_own_thread(name: str, main: Callable[[], Coroutine[Any, Any, None]],
                            on_cancel: Callable[[], None]) -> None:
    """Run ``main()`` on a new event loop in a thread called ``name`` and wait here until it ends.

    Its exception is raised here. If the waiting task is cancelled, ``on_cancel`` is called (to
    make ``main`` end; it must be safe from this thread) and the cancellation goes on.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(err: BaseException | None) -> None:
        if done.done():
            return
        if err is None:
            done.set_result(None)
        else:
            done.set_exception(err)

    def thread_main() -> None:
        err: BaseException | None = None
        try:
            asyncio.run(main())
        except BaseException as caught:  # noqa: BLE001 - handed to the awaiting loop
            err = caught
        if not loop.is_closed():
            loop.call_soon_threadsafe(finish, err)

    threading.Thread(target=thread_main, name=name, daemon=True).start()
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        on_cancel()
        raise
