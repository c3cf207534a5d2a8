"""The hostile-input corpus against a running server: every case gets its clear code, honest
meters keep getting bills, nothing hostile is recorded (a signed reading refused for its content goes
to the chain only as a recorded refusal)."""

from __future__ import annotations

from common.tls import client_context
from scripts.harness.hostile import CASES, format_table, run_corpus
from server.app import ServerApp


async def test_every_hostile_input_gets_its_code_and_honest_meters_are_still_served(server_settings, deployment,
                                                                                   billing):
    settings = server_settings.replace(auth_timeout=2.0)
    app = await ServerApp.start(settings, deployment)
    try:
        await app.relay.caught_up.wait()
        results, bills, leaked = await run_corpus(settings.server_url, client_context(settings.ca_cert_path),
                                                  deployment.domain, billing)
    finally:
        await app.stop()
    assert len(CASES) >= 50
    table = format_table(results)
    assert all(r.ok for r in results), "\n" + table
    assert leaked == [], leaked
    assert all(count >= 5 for count in bills.values()), bills
