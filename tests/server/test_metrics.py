"""``GET /metrics`` from a running server against a real Ganache: counters move with what happens,
gauges follow the queue, labels stay bounded, and gateway workers' counters reach the main process."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from common.eip712 import ReadingData
from common.events import ChainEvent
from common.messages import Ack, Bill, ErrorMessage
from server.api.auth import OPERATOR_KEY_FILE
from server.app import ServerApp
from server.metrics import EventCounter, Exposition
from tests.server.endpoint.test_gateway import next_of
from tests.server.endpoint.test_workers import pool_server  # noqa: F401 - the fixture of a server with two workers


async def scrape(app: ServerApp) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The text ``/metrics`` answers, and its samples by (name, sorted labels)."""
    async with httpx.AsyncClient(base_url=app.settings.http_url, timeout=20) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(answer.text) for s in family.samples}
    return answer.text, samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """A sample's value, 0 where it is not exposed yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_refused_reading_increments_its_codes_counter(server, new_meter, link_for):
    meter = new_meter()
    link = link_for(meter)
    welcome = await link.connect()
    _, before = await scrape(server)
    await link.send_reading(ReadingData(meter.address, 5, int(time.time()) - 10, welcome.last_energy_wh + 10))
    assert (await next_of(link, ErrorMessage)).code == "sequence_gap"
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 10, welcome.last_energy_wh + 10))
    await next_of(link, Ack)
    _, after = await scrape(server)
    refused = "smartmeter_readings_refused_total"
    assert value(after, refused, code="sequence_gap") == value(before, refused, code="sequence_gap") + 1
    assert value(after, refused, code="stale_sequence") == value(before, refused, code="stale_sequence")
    accepted = "smartmeter_readings_accepted_total"
    assert value(after, accepted) == value(before, accepted) + 1
    logins = "smartmeter_meter_logins_total"
    assert value(after, logins, outcome="ok") >= 1
    await link.close()


async def test_a_reading_refused_for_its_content_counts_as_refused_not_accepted_though_it_goes_to_the_chain(
        server, new_meter, link_for):
    meter = new_meter()
    link = link_for(meter)
    welcome = await link.connect()
    _, before = await scrape(server)
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) + 3_600, welcome.last_energy_wh + 10))
    assert (await next_of(link, ErrorMessage)).code == "future_timestamp"
    _, after = await scrape(server)
    refused, accepted = "smartmeter_readings_refused_total", "smartmeter_readings_accepted_total"
    assert value(after, refused, code="future_timestamp") == value(before, refused, code="future_timestamp") + 1
    assert value(after, accepted) == value(before, accepted)
    await link.close()


async def test_the_queue_gauges_follow_the_queue(server, new_meter, link_for):
    server.batcher.stop()  # the readings stay queued
    await server.tasks[1]
    _, empty = await scrape(server)
    assert value(empty, "smartmeter_queue_readings") == 0
    assert value(empty, "smartmeter_queue_oldest_reading_age_seconds") == 0
    meter = new_meter()
    link = link_for(meter)
    welcome = await link.connect()
    for seq in (1, 2):
        await link.send_reading(ReadingData(meter.address, seq, int(time.time()) - 30 + 10 * seq,
                                            welcome.last_energy_wh + 10 * seq))
        await next_of(link, Ack)
    await asyncio.sleep(1.1)
    _, queued = await scrape(server)
    assert value(queued, "smartmeter_queue_readings") == 2
    assert value(queued, "smartmeter_queue_oldest_reading_age_seconds") >= 1.0
    assert value(queued, "smartmeter_part_up", part="batcher") == 0
    server.store.remove_upto(meter.address, 2)
    _, drained = await scrape(server)
    assert value(drained, "smartmeter_queue_readings") == 0
    assert value(drained, "smartmeter_queue_oldest_reading_age_seconds") == 0
    await link.close()


async def test_a_bill_shows_in_the_recorded_readings_the_batches_and_the_chains_gauges(server, new_meter, link_for):
    _, before = await scrape(server)
    meter = new_meter()
    link = link_for(meter)
    welcome = await link.connect()
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 10, welcome.last_energy_wh + 50))
    await next_of(link, Bill)
    text, after = await scrape(server)
    recorded = "smartmeter_readings_recorded_total"
    assert value(after, recorded) == value(before, recorded) + 1
    assert value(after, "smartmeter_chain_events_total", event="ReadingRecorded") == value(after, recorded)
    assert value(after, "smartmeter_batches_mined_total") >= value(before, "smartmeter_batches_mined_total") + 1
    assert value(after, "smartmeter_batch_size_readings_count") >= 1
    head = value(after, "smartmeter_chain_head_block")
    assert head >= value(after, "smartmeter_relay_block") > 0
    assert value(after, "smartmeter_final_lag_blocks") == head - value(after, "smartmeter_final_block")
    assert value(after, "smartmeter_meters_connected") >= 1
    assert value(after, "smartmeter_gateway_balance_ether") > 0
    assert value(after, "smartmeter_gateway_batches_affordable") > 0
    assert value(after, "process_resident_memory_bytes") > 0
    # Never a meter's address (nor any other 40-hex-digit value) as a label.
    assert not re.search(r'="0x[0-9a-fA-F]{40}"', text)
    await link.close()


async def test_rest_requests_are_counted_by_route_template_and_status(server, new_meter):
    meter = new_meter()
    key = {"X-API-Key": (server.settings.data_dir / "api" / OPERATOR_KEY_FILE).read_text().strip()}
    async with httpx.AsyncClient(base_url=server.settings.http_url, timeout=20) as client:
        _, before = await scrape(server)
        assert (await client.get(f"/api/v1/meters/{meter.address}", headers=key)).status_code in (200, 404)
        assert (await client.get(f"/api/v1/meters/{meter.address}")).status_code == 401
        assert (await client.get("/no/such/page")).status_code == 404
        text, after = await scrape(server)
    route = "/api/v1/meters/{address}"
    name = "smartmeter_http_requests_total"
    assert value(after, name, method="GET", route=route, status="401") == \
        value(before, name, method="GET", route=route, status="401") + 1
    assert value(after, name, method="GET", route="unmatched", status="404") >= 1
    assert meter.address.lower() not in text.lower()


async def test_counters_of_gateway_workers_are_added_up_in_the_main_process(pool_server, new_meter,  # noqa: F811
                                                                           link_for):
    _, before = await scrape(pool_server)
    links = []
    for _ in range(4):
        meter = new_meter()
        link = link_for(meter)
        welcome = await link.connect()
        await link.send_reading(ReadingData(meter.address, 3, int(time.time()) - 10, welcome.last_energy_wh + 1))
        assert (await next_of(link, ErrorMessage)).code == "sequence_gap"
        await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 10, welcome.last_energy_wh + 1))
        await next_of(link, Ack)
        links.append(link)
    _, after = await scrape(pool_server)
    for name, labels in (("smartmeter_readings_accepted_total", {}),
                         ("smartmeter_readings_refused_total", {"code": "sequence_gap"}),
                         ("smartmeter_meter_logins_total", {"outcome": "ok"})):
        assert value(after, name, **labels) == value(before, name, **labels) + 4, name
    assert value(after, "smartmeter_gateway_processes_up") == 2
    for link in links:
        await link.close()


def test_families_of_one_name_from_several_sources_are_summed_into_one():
    class Source:
        def __init__(self, *families):
            self.families = families

        def collect(self):
            return iter(self.families)

    def counter(amount: float) -> CounterMetricFamily:
        family = CounterMetricFamily("smartmeter_x", "x", labels=["code"])
        family.add_metric(["a"], amount)
        return family

    only_here = GaugeMetricFamily("smartmeter_y", "y", value=3)
    text = Exposition([Source(counter(2), only_here), Source(counter(5))]).render().decode()
    assert text.count("# TYPE smartmeter_x_total counter") == 1
    assert 'smartmeter_x_total{code="a"} 7.0' in text
    assert "smartmeter_y 3.0" in text


def test_a_block_is_timed_once_from_first_seen_to_final_and_a_replaced_one_never():
    def recorded(block: int) -> ChainEvent:
        return ChainEvent("ReadingRecorded", {"meter": "0x" + "11" * 20, "record": 0}, block, 0, "0x" + "22" * 32)

    def timed() -> float:
        return REGISTRY.get_sample_value("smartmeter_block_final_seconds_count") or 0.0

    counter = EventCounter()
    before = timed()
    for block in (5, 5, 6, 7):
        counter.on_event(recorded(block))
    counter.on_rollback(6, deep=False)  # block 7 was replaced
    counter.on_final(5)
    assert timed() == before + 1
    counter.on_final(7)
    assert timed() == before + 2  # block 6 only; the replaced 7 is not timed
    counter.on_final(9)
    assert timed() == before + 2
