"""Connecting to NATS, and the stream and bucket the reading log and the partition leases live in.

Every process of a deployment on the bus makes sure the ``READINGS`` stream and the lease bucket
exist with the deployment's settings (creating them is idempotent; a stream made with other
settings is left as it is and said at warning level). The stream is a work queue (a reading
leaves it when its owner acknowledges it, once its event is final on chain), in files, with
``BUS_REPLICAS`` copies and a de-duplication window of ``DUPLICATE_WINDOW`` seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from common import errors
from common.logs import log_event
from common.settings import Settings, split_urls
from server.bus.subjects import LEASES, STREAM

__all__ = ["connect", "ensure_stream", "ensure_leases", "DUPLICATE_WINDOW", "LEASE_TTL"]

log = logging.getLogger("bus")

#: Seconds the stream remembers a message id: a publish retried after a lost acknowledgement within it is dropped
#: (beyond it, the writer's queue and the contract's sequence rule still record a reading once).
DUPLICATE_WINDOW = 600.0
#: Seconds a partition lease (and a core's "alive" key) lasts unless renewed: how long a dead core's partitions
#: wait for another core.
LEASE_TTL = 6.0


async def connect(settings: Settings, name: str) -> Client:
    """A connection to the NATS servers at ``BUS_URL`` that reconnects for ever (raises ``BusUnavailable`` when
    none answers at the start)."""

    async def error_cb(err: Exception) -> None:
        log_event(log, "bus_error", logging.WARNING, error=f"{type(err).__name__}: {err}"[:300])

    async def disconnected_cb() -> None:
        log_event(log, "bus_disconnected", logging.WARNING, action="reconnecting to another NATS server")

    async def reconnected_cb() -> None:
        log_event(log, "bus_reconnected", url=str(nc.connected_url.netloc if nc.connected_url else "?"))

    servers = split_urls(settings.bus_url)
    nc = Client()
    try:
        await nc.connect(servers=servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=1,
                         connect_timeout=5, allow_reconnect=True, error_cb=error_cb,
                         disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb,
                         pending_size=8 * 1024 * 1024)
    except Exception as err:  # noqa: BLE001 - nats-py raises several kinds; all mean the same here
        raise errors.BusUnavailable(
            f"cannot reach NATS at {settings.bus_url} ({type(err).__name__}: {err}): check that the NATS servers "
            "run and that BUS_URL names them (nats://host:4222, comma-separated for a cluster)") from err
    return nc


def stream_config(settings: Settings) -> StreamConfig:
    """The reading log's stream as this deployment wants it."""
    return StreamConfig(name=STREAM, subjects=["sm.readings.>"], retention=RetentionPolicy.WORK_QUEUE,
                        storage=StorageType.FILE, num_replicas=settings.bus_replicas,
                        duplicate_window=DUPLICATE_WINDOW, max_msgs=-1, max_bytes=-1)


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the reading log's stream if it is not there (said at warning level if it is, with other settings)."""
    wanted = stream_config(settings)
    try:
        await js.add_stream(wanted)
    except BadRequestError as err:
        info = await js.stream_info(STREAM)
        held: Any = info.config
        if held.num_replicas != wanted.num_replicas or held.retention != wanted.retention:
            log_event(log, "bus_stream_differs", logging.WARNING, stream=STREAM, replicas=held.num_replicas,
                      wanted_replicas=wanted.num_replicas, error=str(err)[:200],
                      action="the stream keeps its settings; change them with the nats CLI if that is meant")


async def ensure_leases(js: JetStreamContext, settings: Settings) -> KeyValue:
    """The bucket of partition leases (keys expire ``LEASE_TTL`` seconds after their last renewal)."""
    try:
        return await js.key_value(LEASES)
    except Exception:  # noqa: BLE001 - nats-py raises BucketNotFoundError or NotFoundError by version
        return await js.create_key_value(bucket=LEASES, ttl=LEASE_TTL, history=1, replicas=settings.bus_replicas)
