"""A JetStream client the cluster tests run on a host of their network (``python -m tests.cluster.nats_client``).

``publish`` sends messages ``m<first>`` .. ``m<first+count-1>`` (subjects ``<stream>.0`` .. ``<stream>.15``),
each with its ``Nats-Msg-Id``, and waits for each acknowledgement with ``js.publish`` and a timeout
(nats-py's ``publish_async`` never resolves an error acknowledgement, its issue #985); a publish that fails
is sent again with the same id until ``--deadline``, which the stream's de-duplication makes safe. ``read``
reads the whole stream back by sequence number. Both print one JSON object on stdout (and to ``--output``).
Run against a local node it is also a small benchmark: ``--count 5000 --concurrency 1`` prints the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError

#: Seconds one publish or API call waits for its answer before it is tried again.
REQUEST_TIMEOUT = 5.0


async def connect(servers: str) -> Client:
    """A connection to any of the cluster's servers that keeps reconnecting."""
    return await nats.connect(servers=servers.split(","), connect_timeout=5, reconnect_time_wait=0.5,
                              max_reconnect_attempts=-1, allow_reconnect=True)


async def until_done(deadline: float, call: Any) -> Any:
    """``await call()`` again until it answers or the deadline passes (then its last error is raised)."""
    while True:
        try:
            return await call()
        except BadRequestError:  # a wrong request stays wrong
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def leader_of(info: Any) -> str:
    """The stream's leader's server name, or '' while it has none."""
    return str(info.cluster.leader or "") if info.cluster is not None else ""


async def publish(args: argparse.Namespace) -> dict[str, Any]:
    """Publish the messages, each until acknowledged or the deadline; what was acknowledged and when."""
    deadline = time.monotonic() + args.deadline
    nc = await connect(args.servers)
    js: JetStreamContext = nc.jetstream(timeout=REQUEST_TIMEOUT)
    if args.create:
        config = StreamConfig(name=args.stream, subjects=[f"{args.stream}.>"], storage=StorageType.FILE,
                              num_replicas=args.replicas)
        await until_done(deadline, lambda: js.add_stream(config))
    acked: list[int] = []
    ack_times: list[float] = []
    duplicates = 0
    errors: Counter[str] = Counter()
    window = asyncio.Semaphore(args.concurrency)

    async def publish_one(i: int) -> None:
        nonlocal duplicates
        headers = {"Nats-Msg-Id": f"m{i}"}
        async with window:
            while time.monotonic() < deadline:
                try:
                    ack = await js.publish(f"{args.stream}.{i % 16}", f"reading {i}".encode(), timeout=REQUEST_TIMEOUT,
                                           headers=headers)
                except asyncio.CancelledError:
                    raise
                except Exception as failure:  # timeouts, no responders, a leader change: send it again
                    errors[type(failure).__name__] += 1
                    await asyncio.sleep(0.2)
                    continue
                acked.append(i)
                ack_times.append(time.monotonic())
                duplicates += bool(ack.duplicate)
                if args.progress is not None and len(acked) % 25 == 0:
                    args.progress.write_text(str(len(acked)))
                return

    began = time.monotonic()
    tasks = []
    for n, i in enumerate(range(args.first, args.first + args.count)):
        if args.rate:
            await asyncio.sleep(max(0.0, began + n / args.rate - time.monotonic()))
        tasks.append(asyncio.create_task(publish_one(i)))
    await asyncio.gather(*tasks)
    seconds = time.monotonic() - began
    times = sorted(ack_times)
    stall = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
    info = await until_done(deadline + 30, lambda: js.stream_info(args.stream))
    await nc.close()
    return {"acked": sorted(acked), "unacked": sorted(set(range(args.first, args.first + args.count)) - set(acked)),
            "duplicate_acks": duplicates, "errors": dict(errors), "seconds": round(seconds, 3),
            "rate": round(len(acked) / seconds, 1) if seconds else 0.0, "longest_stall": round(stall, 3),
            "leader": leader_of(info)}


async def read(args: argparse.Namespace) -> dict[str, Any]:
    """Every message of the stream by sequence number: their message ids, and the stream's replicas."""
    deadline = time.monotonic() + args.deadline
    nc = await connect(args.servers)
    js = nc.jetstream(timeout=REQUEST_TIMEOUT)
    info = await until_done(deadline, lambda: js.stream_info(args.stream))
    ids: list[str] = []
    sequences = list(range(info.state.first_seq, info.state.last_seq + 1))
    for start in range(0, len(sequences), 100):
        chunk = sequences[start:start + 100]
        messages = await asyncio.gather(*(until_done(deadline, lambda s=s: js.get_msg(args.stream, s))
                                          for s in chunk))
        ids += [str((m.headers or {}).get("Nats-Msg-Id", "")) for m in messages]
    replicas = [{"name": r.name, "current": r.current, "offline": r.offline}
                for r in (info.cluster.replicas or [] if info.cluster is not None else [])]
    await nc.close()
    return {"messages": info.state.messages, "ids": ids, "leader": leader_of(info), "replicas": replicas}


def main(argv: list[str] | None = None) -> int:
    """Run one command and print its JSON result."""
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.nats_client")
    parser.add_argument("command", choices=["publish", "read"])
    parser.add_argument("--servers", required=True, help="comma-separated nats:// URLs")
    parser.add_argument("--stream", default="READINGS")
    parser.add_argument("--create", action="store_true", help="create the stream first")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="publishes started a second; 0: as fast as acked")
    parser.add_argument("--concurrency", type=int, default=32, help="publishes awaiting their ack at once")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds before giving up")
    parser.add_argument("--progress", type=Path, help="file that holds the count of acknowledged publishes")
    parser.add_argument("--output", type=Path, help="file to write the JSON result to as well")
    args = parser.parse_args(argv)
    result = asyncio.run(publish(args) if args.command == "publish" else read(args))
    text = json.dumps(result)
    if args.output is not None:
        args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
