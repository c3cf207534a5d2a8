"""Messages in the web dashboard, in a real browser (Debian's Chromium driven by Playwright)
against a running server: a customer writes, the operator's page shows it live with an unread
count, the operator answers, and the customer's page shows the answer live; nothing reloads.

Screenshots go to ``test-artifacts/`` at the repository root for a person to look at.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest
from eth_account import Account
from playwright.async_api import Browser, Page, expect

from common.settings import Settings
from tests.server.api.test_dashboard import ARTIFACTS, EXPECTED_CONSOLE_ERRORS, UI_TIMEOUT_MS, operator_key
from tests.server.api.test_dashboard import browser as browser  # noqa: F401 - the fixture
from tests.server.conftest import meters_indexed

MAX_CHARS = 300


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    """A small message limit, so the page can be shown refusing a long one."""
    return server_settings.replace(message_max_chars=MAX_CHARS)


@pytest.fixture
async def tabs(browser: Browser, server_settings: Settings) -> AsyncIterator[Callable[[], object]]:  # noqa: F811
    """Open browser tabs, each in a context of its own (its own key in localStorage); fails on script errors."""
    contexts = []
    failures: list[str] = []

    async def open_tab() -> Page:
        context = await browser.new_context(viewport={"width": 1280, "height": 860},
                                            timezone_id=server_settings.timezone, locale="en-GB")
        contexts.append(context)
        tab = await context.new_page()
        tab.on("pageerror", lambda err: failures.append(f"uncaught: {err}"))
        tab.on("console", lambda msg: failures.append(f"console: {msg.text}")
               if msg.type == "error" and not msg.text.startswith(EXPECTED_CONSOLE_ERRORS) else None)
        return tab

    yield open_tab
    for context in contexts:
        await context.close()
    assert not failures, failures


async def test_a_customer_and_the_operator_talk_live_with_unread_counts(server, server_settings, billing, tabs):
    meter = Account.create()
    ref = "0x" + secrets.token_hex(32)
    await asyncio.to_thread(billing.register_meter, meter.address, bytes.fromhex(ref[2:]), "west", 0,
                            int(time.time()) - 3_600)
    key = secrets.token_urlsafe(24)
    (server_settings.data_dir / "customers.json").write_text(json.dumps({"customers": [{
        "meter": meter.address, "meter_name": "meter-ada", "account_ref": ref, "name": "Ada <i>Lovelace</i>",
        "address": "1 Analytical Row", "email": "ada@example.org", "api_key": key, "region": "west"}]}))
    await meters_indexed(server, meter.address)

    operator = await tabs()
    await operator.goto(f"{server_settings.http_url}/#key={operator_key(server_settings)}")
    await expect(operator.locator("#live-label")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    await operator.get_by_role("link", name="Messages").click()
    row = operator.locator(f'#conversations-table tr[data-account="{ref}"]')
    await expect(row.locator('[data-field="last"]')).to_have_text("no messages yet", timeout=UI_TIMEOUT_MS)
    await expect(row.locator('[data-field="holder"]')).to_have_text("Ada <i>Lovelace</i>")  # text, not markup
    await expect(operator.locator("#unread-badge")).to_be_hidden()

    customer = await tabs()
    await customer.goto(f"{server_settings.http_url}/#key={key}")
    await expect(customer.locator("#live-label")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    await customer.get_by_role("link", name="Messages").click()
    await expect(customer.locator("#message-list")).to_contain_text("No messages yet", timeout=UI_TIMEOUT_MS)
    for tab in (operator, customer):
        await tab.evaluate("window.notReloaded = true")

    # Too long a message is refused with the server's sentence; nothing is sent.
    await customer.locator("#message-body").fill("x" * (MAX_CHARS + 1))
    await customer.get_by_role("button", name="Send").click()
    await expect(customer.locator("#message-result")).to_contain_text(f"at most {MAX_CHARS} characters",
                                                                      timeout=UI_TIMEOUT_MS)

    question = "Why did my bill <b>double</b>?\nIt was £40 last month."
    await customer.locator("#message-body").fill(question)
    await customer.get_by_role("button", name="Send").click()
    mine = customer.locator("#message-list li.message.mine")
    await expect(mine).to_have_count(1, timeout=UI_TIMEOUT_MS)
    await expect(mine.locator(".message-body")).to_have_text(question)  # newlines kept, tags shown as text
    await expect(mine.locator('[data-field="state"]')).to_have_text("sent")
    await expect(customer.locator("#message-body")).to_have_value("")
    await expect(customer.locator("#message-result")).to_be_empty()

    # The operator's list shows it at once, at the top, with one unread, and so does the top bar.
    await expect(row.locator('[data-field="unread"]')).to_have_text("1", timeout=UI_TIMEOUT_MS)
    await expect(row.locator('[data-field="last"]')).to_contain_text("Why did my bill <b>double</b>?")
    await expect(operator.locator("#conversations-table tbody tr").first).to_have_attribute("data-account", ref)
    await expect(operator.locator("#unread-badge")).to_have_text("1", timeout=UI_TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    await operator.screenshot(path=str(ARTIFACTS / "dashboard-messages-list.png"), full_page=True)

    # Opening the conversation marks the customer's message read, for both of them.
    await row.locator('[data-field="holder"] a').click()
    theirs = operator.locator("#message-list li.message.theirs")
    await expect(theirs.locator(".message-body")).to_have_text(question, timeout=UI_TIMEOUT_MS)
    await expect(theirs.locator(".message-meta strong")).to_have_text("Ada <i>Lovelace</i>")
    await expect(operator.locator("#unread-badge")).to_be_hidden(timeout=UI_TIMEOUT_MS)
    await expect(mine.locator('[data-field="state"]')).to_have_text("read", timeout=UI_TIMEOUT_MS)

    answer = "The tariff rose on the 1st; your use is unchanged."

    async def late_answer_to_send(route):
        """The answer to the operator's send arrives after the customer's live read mark (as under load)."""
        if route.request.method != "POST":
            await route.continue_()
            return
        response = await route.fetch()
        await asyncio.sleep(1.5)
        await route.fulfill(response=response)

    await operator.route(re.compile(r".*/api/v1/accounts/[^/]+/messages$"), late_answer_to_send)
    await operator.locator("#message-body").fill(answer)
    await operator.locator("#message-body").press("Control+Enter")
    reply = customer.locator("#message-list li.message.theirs")
    await expect(reply.locator(".message-body")).to_have_text(answer, timeout=UI_TIMEOUT_MS)
    await expect(reply.locator(".message-meta strong")).to_have_text("Operator")
    # The customer has the conversation open, so the answer is read at once, and the operator sees it.
    await expect(operator.locator('#message-list li.message.mine [data-field="state"]')).to_have_text(
        "read", timeout=UI_TIMEOUT_MS)
    await asyncio.sleep(2)  # past the late answer to the send: it must not take the read mark back
    await expect(operator.locator('#message-list li.message.mine [data-field="state"]')).to_have_text("read")
    await expect(customer.locator("#unread-badge")).to_be_hidden()
    for tab in (operator, customer):
        assert await tab.evaluate("window.notReloaded === true"), "a page reloaded instead of updating live"
    await customer.screenshot(path=str(ARTIFACTS / "dashboard-messages-customer.png"), full_page=True)

    # A customer cannot open another account's conversation: the page shows their own.
    await customer.evaluate(f"location.hash = '#/messages/0x{'ab' * 32}'")
    await expect(customer.locator("#message-list li.message")).to_have_count(2, timeout=UI_TIMEOUT_MS)
    assert ref in await customer.locator("#conversation-head").inner_html()
