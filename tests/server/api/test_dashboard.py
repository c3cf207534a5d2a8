"""The web dashboard in a real browser (Debian's Chromium driven by Playwright) against a running
server: live updates without reloading, the meter page's chart, and what a customer may see.

Screenshots go to ``test-artifacts/`` at the repository root for a person to look at.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from pypdf import PdfReader

from common.demand_response import DemandResponse
from common.eip712 import ReadingData
from common.messages import Bill
from common.settings import ROOT, Settings
from common.tariff import format_pounds
from server.api import HttpServer
from tests.contracts.test_demand_response import POWER_W
from tests.server.conftest import meters_indexed
from tests.server.dr_scene import settled_scene
from tests.server.endpoint.test_gateway import next_of

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
#: How long the page may take to show what the server knows (ms, Playwright's unit).
UI_TIMEOUT_MS = 15_000
#: What the browser itself logs as errors that tests cause on purpose: a refused key's 401, and
#: the live socket failing to connect while the server is down.
EXPECTED_CONSOLE_ERRORS = ("Failed to load resource", "WebSocket connection to")

#: Whether the chart on #consumption-chart holds at least one hour with consumption.
CHART_HAS_DATA = """() => {
    const chart = window.Chart && Chart.getChart(document.getElementById("consumption-chart"));
    return Boolean(chart) && chart.data.datasets[0].data.some((kwh) => kwh > 0);
}"""
#: How many pixels of the chart's canvas were drawn on (not fully transparent).
CANVAS_INK = """() => {
    const canvas = document.getElementById("consumption-chart");
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let ink = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) ink += 1;
    return ink;
}"""
#: How many bars (or points) of the chart are drawn taller than a pixel above the axis.
DRAWN_BARS = """() => {
    const chart = Chart.getChart(document.getElementById("consumption-chart"));
    const base = chart.scales.y.getPixelForValue(0);
    return chart.getDatasetMeta(0).data.filter((element) => base - element.y > 1).length;
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with nothing reaching for the network."""
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}; run scripts/bootstrap.sh --browser")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser, server_settings: Settings) -> AsyncIterator[Page]:
    """A fresh browser page in the server's time zone (so "today" is the server's day); fails on script errors."""
    context = await browser.new_context(viewport={"width": 1360, "height": 900},
                                        timezone_id=server_settings.timezone, locale="en-GB")
    tab = await context.new_page()
    failures: list[str] = []
    tab.on("pageerror", lambda err: failures.append(f"uncaught: {err}"))
    tab.on("console", lambda msg: failures.append(f"console: {msg.text}")
           if msg.type == "error" and not msg.text.startswith(EXPECTED_CONSOLE_ERRORS) else None)
    yield tab
    await context.close()
    assert not failures, failures


def operator_key(settings: Settings) -> str:
    return (settings.data_dir / "api" / "operator.key").read_text().strip()


def row(page: Page, address: str):
    return page.locator(f'#fleet-table tr[data-address="{address}" i]')


def local_day(settings: Settings, at: float) -> str:
    """The server's calendar day (YYYY-MM-DD) at a unix time."""
    return dt.datetime.fromtimestamp(at, settings.tz).date().isoformat()


def hours_in(settings: Settings, day: str) -> int:
    """How many hours a local day has (23 or 25 when the clocks change)."""
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=settings.tz)
    end = dt.datetime.combine(dt.date.fromisoformat(day) + dt.timedelta(days=1), dt.time(), tzinfo=settings.tz)
    return round((end.timestamp() - start.timestamp()) / 3_600)


async def test_operator_sees_the_fleet_update_live_and_the_meters_consumption_chart(
    server, server_settings, new_meter, link_for, billing, page
):
    meter, other = new_meter(region="north"), new_meter(region="south")
    await meters_indexed(server, meter.address, other.address)
    await page.goto(f"{server_settings.http_url}/#key={operator_key(server_settings)}")

    await expect(row(page, meter.address)).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(row(page, other.address)).to_be_visible()
    assert "key=" not in page.url, "the key must leave the address bar"
    amount = row(page, meter.address).locator(".amount-due")
    await expect(amount).to_have_text(format_pounds(0))
    await expect(page.locator("#live-label")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    await page.evaluate("window.notReloaded = true")

    message = f"Demand peak <b>{secrets.token_hex(4)}</b> & please reduce usage"
    raised = await asyncio.to_thread(billing.raise_grid_alert, 1, "reduce_usage", "north", message,
                                     int(time.time()) + 600)
    alert_id = billing.events("GridAlert", raised)[0].args.id
    await expect(page.locator("#grid-alerts .alert-message", has_text=message)).to_be_visible(
        timeout=UI_TIMEOUT_MS)  # shown as text, tags and all

    link = link_for(meter)
    welcome = await link.connect()
    await expect(row(page, meter.address).locator('[data-field="connection"]')).to_have_text(
        "connected", timeout=UI_TIMEOUT_MS)
    now = int(time.time())
    # A day's quiet use, then a heavy last hour: the chart has a peak and the hourly limit is passed.
    await link.send_reading(ReadingData(meter.address, 1, now - 3_600, welcome.last_energy_wh + 1_500))
    first = await next_of(link, Bill)
    await expect(amount).to_have_text(format_pounds(first.amount_due), timeout=UI_TIMEOUT_MS)
    await link.send_reading(ReadingData(meter.address, 2, now - 10, welcome.last_energy_wh + 8_500))
    second = await next_of(link, Bill)
    await expect(amount).to_have_text(format_pounds(second.amount_due), timeout=UI_TIMEOUT_MS)
    await expect(row(page, meter.address).locator('[data-field="energy"]')).to_have_text("8.50")
    await expect(row(page, other.address).locator(".amount-due")).to_have_text(format_pounds(0))
    await expect(page.locator("#consumption-alerts li.alert").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert await page.evaluate("window.notReloaded === true"), "the page reloaded instead of updating live"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-fleet.png"), full_page=True)

    await row(page, meter.address).get_by_role("link").click()
    await expect(page).to_have_url(re.compile(f"#/meter/{meter.address}$"))
    await expect(page.locator("#bill-breakdown .amount-due")).to_have_text(format_pounds(second.amount_due),
                                                                          timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#day")).to_have_value(local_day(server_settings, time.time()))
    shown = local_day(server_settings, now - 10)
    if shown != local_day(server_settings, time.time()):
        await page.locator("#day").fill(shown)  # the test crossed midnight
    await page.wait_for_function(CHART_HAS_DATA, timeout=UI_TIMEOUT_MS)
    await page.wait_for_timeout(500)  # the chart's 300 ms animation
    assert await page.evaluate(DRAWN_BARS) > 0
    assert await page.evaluate(CANVAS_INK) > 1_000, "the chart's canvas is blank"
    await expect(page.locator("#bills-table tbody tr")).to_have_count(1)
    await expect(page.locator("#hourly-table tbody tr")).to_have_count(hours_in(server_settings, shown))
    await expect(page.locator("#meter-consumption-alerts li.alert").first).to_be_visible()

    await page.get_by_role("button", name="Line").click()
    assert await page.evaluate("Chart.getChart(document.getElementById('consumption-chart')).config.type") == "line"
    await page.wait_for_function(CHART_HAS_DATA)
    await page.wait_for_timeout(500)
    assert await page.evaluate(CANVAS_INK) > 1_000
    await page.get_by_role("button", name="Bars").click()
    await page.wait_for_timeout(500)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-meter.png"), full_page=True)

    timeline = page.locator("#grid-timeline .timeline-row", has_text=message)
    await expect(timeline).to_contain_text("in force")
    await asyncio.to_thread(billing.clear_grid_alert, alert_id)
    await expect(timeline).to_contain_text("cleared", timeout=UI_TIMEOUT_MS)

    await page.locator("#hourly-limit").fill("2500")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#threshold-result")).to_have_text("Saved.", timeout=UI_TIMEOUT_MS)
    assert server.index.limit_for(meter.address) == 2_500
    await link.close()


async def test_customer_sees_only_their_own_meter_and_downloads_its_statement(server, server_settings, new_meter,
                                                                               page):
    mine, theirs = new_meter(region="east"), new_meter(region="east")
    key = secrets.token_urlsafe(24)
    name = "Kitchen <b>&amp;</b> hall"
    (server_settings.data_dir / "customers.json").write_text(json.dumps({"customers": [{
        "meter": mine.address, "meter_name": name, "account_ref": "0x" + "42" * 32, "name": "Ava Jones",
        "address": "12 Mill Lane, York YO1", "email": "ava.jones@example.org", "api_key": key, "region": "east",
    }]}))
    await meters_indexed(server, mine.address, theirs.address)

    await page.goto(f"{server_settings.http_url}/#key={key}")
    await expect(page).to_have_url(f"{server_settings.http_url}/#/meter/{mine.address}", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#meter-head h1")).to_have_text(name, timeout=UI_TIMEOUT_MS)
    assert await page.locator("#meter-head b").count() == 0, "a meter name must be shown as text, not HTML"
    await expect(page.locator("#role")).to_have_text("customer")
    await expect(page.locator("#live-label")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    assert await page.locator("#fleet-table").count() == 0
    assert await page.get_by_text("All meters").count() == 0
    assert theirs.address not in await page.content()

    # The open period's statement: a link cannot carry the key, so the page fetches it and hands it over.
    link = page.locator('#bills-table tr[data-period="1"] .statement-link[data-format="pdf"]')
    await expect(link).to_be_visible(timeout=UI_TIMEOUT_MS)
    async with page.expect_download() as started:
        await link.click()
    download = await started.value
    assert download.suggested_filename == "statement-Kitchen-b-amp-b-hall-period-1-provisional.pdf"
    saved = PdfReader(await download.path())
    assert "Ava Jones" in saved.pages[0].extract_text() and "provisional" in saved.pages[0].extract_text()
    await expect(page.locator("#statement-status")).to_have_text(f"Downloaded {download.suggested_filename}.")

    await page.evaluate("location.hash = '#/'")  # the fleet is not for customers: back to their meter
    await expect(page).to_have_url(f"{server_settings.http_url}/#/meter/{mine.address}")
    await page.evaluate(f"location.hash = '#/meter/{theirs.address}'")
    await expect(page).to_have_url(f"{server_settings.http_url}/#/meter/{mine.address}")
    async with httpx.AsyncClient(base_url=server_settings.http_url, headers={"X-API-Key": key}) as api:
        assert [m["address"] for m in (await api.get("/api/v1/meters")).json()] == [mine.address]


async def test_the_page_reconnects_and_catches_up_after_the_live_connection_drops(
    server, server_settings, new_meter, link_for, page
):
    meter = new_meter()
    await meters_indexed(server, meter.address)
    await page.goto(f"{server_settings.http_url}/#key={operator_key(server_settings)}")
    live = page.locator("#live-label")
    await expect(live).to_have_text("live", timeout=UI_TIMEOUT_MS)
    await page.evaluate("window.notReloaded = true")

    app = server.http.app
    await server.http.stop()
    await expect(live).to_contain_text("reconnecting", timeout=UI_TIMEOUT_MS)
    # A bill while the page is cut off: it must catch up once the socket is back.
    link = link_for(meter)
    welcome = await link.connect()
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 10, welcome.last_energy_wh + 900))
    bill = await next_of(link, Bill)
    restarted = HttpServer(app, server_settings.server_host, server_settings.http_port)
    restarted.start()
    try:
        await expect(live).to_have_text("live", timeout=UI_TIMEOUT_MS)
        await expect(row(page, meter.address).locator(".amount-due")).to_have_text(format_pounds(bill.amount_due))
        assert await page.evaluate("window.notReloaded === true"), "the page reloaded instead of reconnecting"
    finally:
        await link.close()
        await restarted.stop()


async def test_errors_are_explained_in_plain_words_and_signing_out_forgets_the_key(server, server_settings, page):
    await page.goto(f"{server_settings.http_url}/")
    await page.locator("#api-key").fill("not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#sign-in-error")).to_contain_text("this API key is not known",
                                                                 timeout=UI_TIMEOUT_MS)

    await page.locator("#api-key").fill(operator_key(server_settings))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#fleet-table")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await page.reload()
    await expect(page.locator("#fleet-table")).to_be_visible(timeout=UI_TIMEOUT_MS)  # the key was kept
    await page.evaluate(f"location.hash = '#/meter/0x{'11' * 20}'")
    await expect(page.locator("#meter-error")).to_contain_text("is registered", timeout=UI_TIMEOUT_MS)
    await page.get_by_role("link", name="sign out").click()
    await expect(page.locator("#sign-in-form")).to_be_visible()
    assert await page.evaluate("localStorage.length") == 0


#: The day chart's baseline datasets: event id, kind and the hours that have a value (kWh).
BASELINES = """() => {
    const chart = Chart.getChart(document.getElementById("consumption-chart"));
    return chart.data.datasets.filter((d) => d.drEvent).map((d) => ({
        event: d.drEvent, kind: d.baselineKind, label: d.label, values: d.data.filter((v) => v !== null) }));
}"""


async def test_the_meter_page_shows_the_demand_response_credit_and_the_baseline_against_the_actual(
    snapshot, server, server_settings, chain, page
):
    dr = DemandResponse(chain, server.deployment)
    settled = await settled_scene(server, dr)
    meter, event = settled.scene.meters[0], settled.scene.event_id
    credit = next(c for c in dr.credits(event) if c.meter == meter.address)
    assert dr.credit_of(meter.address, credit.period_id) == credit.amount > 0
    payable = dr.billing.bill(meter.address).amount_due - credit.amount

    await page.goto(f"{server_settings.http_url}/#key={operator_key(server_settings)}")
    await expect(row(page, meter.address)).to_be_visible(timeout=UI_TIMEOUT_MS)
    await page.evaluate(f"location.hash = '#/meter/{meter.address}'")
    breakdown = page.locator("#bill-breakdown")
    await expect(breakdown.get_by_text("Demand-response credit")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(breakdown.locator('[data-field="dr-credit"]')).to_have_text(f"−{format_pounds(credit.amount)}")
    await expect(breakdown.locator('[data-field="payable"]')).to_have_text(format_pounds(payable))
    bill_row = page.locator(f'#bills-table tr[data-period="{credit.period_id}"]')
    await expect(bill_row.locator(".amount-payable")).to_have_text(format_pounds(payable), timeout=UI_TIMEOUT_MS)

    await page.locator("#day").fill(local_day(server_settings, settled.scene.terms.start))
    line = page.locator(f'#dr-events li[data-event="{event}"]')
    await expect(line).to_contain_text(f"credit {format_pounds(credit.amount)}", timeout=UI_TIMEOUT_MS)
    await expect(line).to_contain_text("baseline 0.500 kWh, actual 0.100 kWh")
    await page.wait_for_function(f"() => ({BASELINES})().some((d) => d.event === {event})", timeout=UI_TIMEOUT_MS)
    (baseline,) = [d for d in await page.evaluate(BASELINES) if d["event"] == event]
    # Steady 500 W outside the window, so each hour the window touches would have used 0.5 kWh without it.
    assert baseline["kind"] == "credited" and baseline["label"] == f"Baseline, event {event}"
    assert baseline["values"] and all(abs(v - POWER_W / 1000) < 1e-9 for v in baseline["values"])
    await page.wait_for_timeout(500)  # the chart's 300 ms animation
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-demand-response.png"), full_page=True)

    # The next day: event 2 is meter b's, not this meter's; nothing is marked.
    later_day = local_day(server_settings, settled.scene.terms.start + 86_400)
    if later_day != local_day(server_settings, settled.scene.terms.end):
        await page.locator("#day").fill(later_day)
        await expect(page.locator("#dr-events li")).to_have_count(0, timeout=UI_TIMEOUT_MS)


DASHBOARD = ROOT / "server" / "dashboard"
#: The dashboard's modules stay small, one concern each.
MAX_MODULE_LINES = 400


async def test_the_dashboard_modules_are_served_as_javascript_and_each_import_names_what_its_module_exports(server):
    modules = sorted(DASHBOARD.glob("*.js"))
    exported = {m.name: set(re.findall(r"(?m)^export (?:async )?(?:function|class|const|let) ([\w$]+)", m.read_text()))
                for m in modules}
    async with httpx.AsyncClient(base_url=server.settings.http_url, timeout=20) as client:
        index = (await client.get("/")).text
        assert '<script type="module" src="/static/app.js"></script>' in index
        for module in modules:
            served = await client.get(f"/static/{module.name}")
            # A module script with another media type is refused by the browser (HTML's strict MIME check).
            assert served.status_code == 200 and served.headers["content-type"].startswith("text/javascript"), module
            assert "content-security-policy" not in served.headers  # none to allow modules in
            assert len(module.read_text().splitlines()) <= MAX_MODULE_LINES, module.name
            for names, target in re.findall(r'(?m)^import \{ ([^}]*) \} from "\./([\w-]+\.js)";', module.read_text()):
                assert set(names.split(", ")) <= exported[target], (module.name, target)
