"""The independent check of demand-response credits (tools/verify/check.mjs with baseline.mjs and credits.mjs)
against a real Ganache of its own: four households with twelve days of uneven use, an event settled for three of
them (the fourth opted out, the second opted out and withdrew it), one cancelled, one changed before it started
(which lapsed the third's opt-out) and settled after a bill was issued (one household used more, so is owed
nothing), and one left to be credited by hand with a wrong baseline."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from common.batches import pack_reading
from common.chain import ChainClient
from common.demand_response import DemandResponse, Signal, Terms, measure_event
from common.eip712 import ReadingData, sign_optout, sign_reading
from common.settings import ROOT, Settings
from operations.demand_response import settle, verify
from tests.contracts.test_demand_response import advance_to
from tests.support import deployed_on_own_chain
from tests.tools.test_verify import LyingNode, add_to_word

CHECK = ROOT / "tools" / "verify" / "check.mjs"
HOUR = 3_600
DAY = 86_400
REGION = "verify-dr"
RATE = 100_000  # millipence per kWh of reduction
CREDIT_APPLIED = "0x" + keccak(text="CreditApplied(address,uint64,uint32,uint64,uint64,uint64)").hex()
#: Seconds between one household's readings, in turn: never on a half hour, so every delta is split.
STEPS = (2_700, 3_900, 1_800, 4_500, 2_400)


@dataclass
class Households:
    """Four meters' keys and registers, and the windows in which each draws a set power instead of its own."""

    dr: DemandResponse
    keys: list[LocalAccount]
    seqs: list[int]
    registers: list[int]
    last: list[int]
    overrides: dict[int, list[tuple[int, int, int]]]  # meter index -> (start, end, watts)

    def watts(self, i: int, t0: int, t1: int) -> int:
        """Meter i's power over [t0, t1): its own (an evening peak, a different figure each half hour) or a set one."""
        for start, end, power in self.overrides.get(i, []):
            if t0 < end and start < t1:
                return power
        half = t0 // 1_800
        return 300 + 150 * i + (half * 7_919 + i * 104_729) % 900 + (600 if 34 <= half % 48 < 42 else 0)

    def read(self, until: int) -> None:
        """Every meter's readings up to ``until``, signed with its key and submitted by the gateway."""
        signed = []
        for i, key in enumerate(self.keys):
            t = self.last[i]
            while t + STEPS[self.seqs[i] % len(STEPS)] <= until:
                step = STEPS[self.seqs[i] % len(STEPS)]
                self.registers[i] += self.watts(i, t, t + step) * step // HOUR
                t += step
                self.seqs[i] += 1
                r = ReadingData(key.address, self.seqs[i], t, self.registers[i])
                signed.append((r, sign_reading(bytes(key.key), self.dr.deployment.domain, r)))
            self.last[i] = t
        for i in range(0, len(signed), 200):
            batch = b"".join(pack_reading(r, s) for r, s in signed[i:i + 200])
            self.dr.client.transact(self.dr.settings.gateway_key,
                                    self.dr.billing.contract.functions.submitReadings(batch), gas=25_000_000)


@dataclass
class Scene:
    """The chain the verifier checks and what was done on it."""

    settings: Settings
    dr: DemandResponse
    meters: list[str]
    events: dict[str, int]  # settled, cancelled, changed, by_hand -> id


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings) -> Iterator[Scene]:
    """Twelve days of use, then four events over three days on a Ganache of their own (time travels here)."""
    with deployed_on_own_chain(tmp_path_factory.mktemp("verify-credits"), base_settings) as (settings, deployment):
        dr = DemandResponse(ChainClient(settings), deployment)
        now = dr.billing.now()
        start = -(-(now + 2 * HOUR) // 1_800) * 1_800
        opened = start - 12 * DAY - 5 * HOUR + 777
        keys = [Account.create() for _ in range(4)]
        dr.billing.register_meters([(k.address, b"\x02" * 32, REGION, 1_000 * i) for i, k in enumerate(keys)],
                                   opened_at=opened)
        homes = Households(dr, keys, [0] * 4, [1_000 * i for i in range(4)], [opened] * 4, {})
        homes.read(now)
        a, b, c, d = (k.address for k in keys)
        settled = dr.create_event("dfs", Terms(start, HOUR, 1_800, Signal.LEVEL, 2, RATE), regions=[REGION])
        domain, settled_terms = deployment.demand_response_domain, Terms(start, HOUR, 1_800, Signal.LEVEL, 2, RATE)
        dr.opt_out(settled, d, 0, sign_optout(bytes(keys[3].key), domain, settled, 0, settled_terms))
        dr.opt_out(settled, b, 0, sign_optout(bytes(keys[1].key), domain, settled, 0, settled_terms))
        dr.opt_out(settled, b, 0, sign_optout(bytes(keys[1].key), domain, settled, 0, settled_terms, withdrawal=True),
                   withdrawal=True)
        cancelled = dr.create_event("dfs", Terms(start + DAY, HOUR, 0, Signal.LEVEL, 3, RATE), meters=[a, b, c])
        dr.cancel_event(cancelled)  # its day stays a baseline day of the next event
        first_terms = Terms(start + 2 * DAY + 1_800, 2 * HOUR, 0, Signal.LEVEL, 1, RATE)
        changed = dr.create_event("dfs", first_terms, meters=[a, b, c])
        dr.opt_out(changed, c, 0, sign_optout(bytes(keys[2].key), domain, changed, 0, first_terms))  # lapses below
        dr.modify_event(changed, Terms(start + 2 * DAY, HOUR, 0, Signal.PRICE, 35_000, 2 * RATE))
        by_hand = dr.create_event("dfs", Terms(start + 2 * DAY + 4 * HOUR, 1_800, 0, Signal.LEVEL, 1, RATE),
                                  meters=[c])
        homes.overrides = {0: [(start, start + HOUR, 100), (start + 2 * DAY, start + 2 * DAY + HOUR, 150)],
                           1: [(start + 2 * DAY, start + 2 * DAY + HOUR, 3_000)]}  # a responds; b uses more

        advance_to(dr, start + 2 * HOUR)
        homes.read(start + 2 * HOUR)
        settle(dr, settled)
        dr.billing.close_billing_period(a)  # a's next credit goes on its second period
        advance_to(dr, start + 2 * DAY + 7 * HOUR)
        homes.read(start + 2 * DAY + 7 * HOUR)
        settle(dr, changed)
        yield Scene(settings, dr, [a, b, c, d], {"settled": settled, "cancelled": cancelled, "changed": changed,
                                                 "by_hand": by_hand})


def check(scene: Scene, *args: str, rpc: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the verifier as a customer would."""
    node = shutil.which("node")
    assert node is not None, "Node.js is required (scripts/bootstrap.sh checks for it)"
    path = scene.settings.deployments_dir / f"{scene.dr.deployment.chain_id}.json"
    return subprocess.run([node, str(CHECK), "--rpc", rpc or scene.settings.chain_rpc_url, "--deployment", str(path),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def figures(row: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """A JSON credit row's event, period, baseline, actual and amount."""
    return (int(row["eventId"]), int(row["periodId"]), int(row["baselineWh"]), int(row["actualWh"]),
            int(row["amount"]))


def test_the_verifier_recomputes_every_demand_response_credit_and_agrees_with_the_settlement(scene: Scene) -> None:
    a, b, c, _ = scene.meters
    settled, changed = scene.events["settled"], scene.events["changed"]
    assert verify(scene.dr) == ([], 6)  # the Python recomputation agrees too
    result = check(scene, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["agrees"] is True and report["credits"]["agrees"] is True
    rows = report["credits"]["rows"]
    on_chain = {(r.event_id, r.meter): (r.event_id, r.period_id, r.baseline_wh, r.actual_wh, r.amount)
                for r in scene.dr.credits()}
    assert {(int(r["eventId"]), r["meter"]): figures(r) for r in rows} == on_chain
    assert sorted(on_chain) == sorted((e, m) for e in (settled, changed) for m in (a, b, c))
    for row in rows:
        assert row["agrees"] and row["problems"] == []
        recomputed = row["recomputed"]
        assert (int(recomputed["baselineWh"]), int(recomputed["actualWh"]), int(recomputed["amount"])) == \
            figures(row)[2:]
    by_key = {(int(r["eventId"]), r["meter"]): r for r in rows}
    assert int(by_key[settled, a]["amount"]) > 0 and int(by_key[changed, a]["amount"]) > 0  # a responded twice
    assert int(by_key[changed, b]["amount"]) == 0 < int(by_key[changed, b]["actualWh"]) - int(
        by_key[changed, b]["baselineWh"])  # b used more: owed nothing
    assert int(by_key[changed, a]["periodId"]) == 2 and int(by_key[settled, a]["periodId"]) == 1
    assert int(by_key[changed, a]["recomputed"]["days"]) == 10  # the cancelled event's day counted, the settled's not
    assert report["credits"]["summary"].startswith("6 demand-response credits recomputed from the readings and ")
    record = scene.dr.deployment.demand_response
    assert record is not None and report["credits"]["summary"].endswith(f"of contract {record.address}: all agree")

    # One household checks its own: its two credits, in words, after the bill summary.
    mine = check(scene, "--meter", a)
    assert mine.returncode == 0, mine.stdout + mine.stderr
    lines = mine.stdout.splitlines()
    assert len(lines) == 4 and lines[2].endswith("all agree with the contract")
    assert lines[3].startswith("2 demand-response credits recomputed") and lines[3].endswith(": all agree")


def test_the_verifier_fails_naming_a_credit_recorded_by_hand_with_a_wrong_baseline(scene: Scene) -> None:
    c = scene.meters[2]
    by_hand = scene.events["by_hand"]
    right = next(r.measurement for r in measure_event(scene.dr, scene.dr.event(by_hand)) if r.meter == c)
    assert right is not None and right.baseline_wh is not None
    w3 = scene.dr.client.w3
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        scene.dr.credit(by_hand, [(c, right.baseline_wh + 250, right.actual_wh)])
        result = check(scene)
    finally:
        assert w3.provider.make_request("evm_revert", [snapshot])["result"]  # type: ignore[arg-type]
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-3].endswith("all agree with the contract")  # the bills themselves are right
    named = [line for line in lines if line.startswith(f"event {by_hand}, meter {c} (block ")]
    assert len(named) == 1
    assert f"baseline {right.baseline_wh + 250} Wh, recomputed {right.baseline_wh} Wh" in named[0]
    wrong_amount = max(0, right.baseline_wh + 250 - right.actual_wh) * RATE
    assert f"credit {wrong_amount} micropence, recomputed {right.reduction_wh * RATE}" in named[0]
    assert "actual" not in named[0]
    assert lines[-1].endswith(": 1 of 7 credits DISAGREE")


def test_the_verifier_fails_when_a_credit_is_said_to_be_on_a_billing_period_that_was_not_open(scene: Scene) -> None:
    a = scene.meters[0]
    changed = scene.events["changed"]

    def earlier_period(log: dict[str, Any]) -> None:
        topics = log["topics"]
        if topics[0] == CREDIT_APPLIED and topics[1][-40:] == a[2:].lower() and int(topics[2], 16) == changed:
            add_to_word(log, 0, -1)  # periodId 2 -> 1

    with LyingNode(scene.settings.chain_rpc_url, earlier_period) as node:
        result = check(scene, "--json", rpc=node.url)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["credits"]["agrees"] is False and all(r["agrees"] for r in report["rows"])
    wrong = [r for r in report["credits"]["rows"] if not r["agrees"]]
    assert [(int(r["eventId"]), r["meter"]) for r in wrong] == [(changed, a)]
    assert wrong[0]["problems"] == ["put on billing period 1, but the meter's open period was 2"]


def test_a_deployment_file_without_the_demand_response_contract_is_checked_as_before(
        scene: Scene, tmp_path: Path) -> None:
    data = scene.dr.deployment.to_json()
    del data["demandResponse"]
    (tmp_path / f"{scene.dr.deployment.chain_id}.json").write_text(json.dumps(data))
    older = replace(scene, settings=scene.settings.replace(deployments_dir=tmp_path))
    result = check(older, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["credits"] is None and report["agrees"] is True
    text = check(older)
    assert text.returncode == 0 and text.stdout.splitlines()[-1].endswith("all agree with the contract")
    assert "demand-response" not in text.stdout
