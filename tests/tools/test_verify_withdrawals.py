"""The independent bill check (tools/verify/check.mjs) on a chain that withdraws a tariff version and a
clock change, and where meters report after long silences (priced by the contract in closed form): it
must agree with every bill, to the micropence."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from eth_account import Account
from eth_utils import keccak

from common.billing import Billing
from common.chain import ChainClient
from common.eip712 import ReadingData, sign_reading
from common.settings import ROOT, Settings
from common.tariff import CLOCK_LOCAL, PriceRule, TariffVersion
from tests.support import deployed_on_own_chain

CHECK = ROOT / "tools" / "verify" / "check.mjs"
DAY = 86_400
PEAK = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]


def test_the_verifier_agrees_after_withdrawals_and_long_silences(tmp_path: Path, base_settings: Settings) -> None:
    with deployed_on_own_chain(tmp_path, base_settings) as (settings, deployment):
        billing = Billing(ChainClient(settings), deployment)
        skew = settings.max_future_skew
        start = (billing.now() + skew) // 1_800 * 1_800 + 1_800
        billing.set_tariff(TariffVersion(start, 55_000, PriceRule.banded(PEAK, [8_500, 24_670, 35_000]),
                                         PriceRule.day_ahead(4_100), CLOCK_LOCAL))
        billing.publish_day_ahead(start + DAY, [], [5_000 + 31 * i for i in range(100)])
        count = billing.contract.functions.tariffCount().call()
        # Scheduled, then withdrawn before it starts: the verifier must not price the weeks after with it.
        billing.set_tariff(TariffVersion.flat(90_000, 90_000, start + 10 * DAY, 1))
        billing.withdraw_tariff(count + 1)
        last_change = billing.schedule().clock.changes[-1][0]
        billing.withdraw_clock_change(last_change)

        meters = [Account.from_key(keccak(b"verify-silent-%d" % i)) for i in range(3)]
        billing.register_meters([(m.address, b"\x06" * 32, "north", 2_000) for m in meters], opened_at=start - 86_400)
        billing.client.w3.provider.make_request("evm_increaseTime", [start + 45 * DAY - billing.now()])
        billing.client.w3.provider.make_request("evm_mine", [])
        # Half-hourly, then silent for days, weeks; one meter twice, with its bill closed between.
        plans = {0: [start + 600, start + 2_400, start + 20 * DAY + 17],
                 1: [start + 7 * DAY + 5, start + 40 * DAY + 1_234],
                 2: [start + 3 * DAY, start + 3 * DAY + 1_800 * 30 + 9, start + 44 * DAY]}
        for i, times in plans.items():
            account, signed = meters[i], []
            for seq, t in enumerate(times, start=1):
                reading = ReadingData(account.address, seq, t, 2_000 + 11_111 * seq * (i + 1), 777 * seq * i)
                signed.append((reading, sign_reading(bytes(account.key), deployment.domain, reading)))
            receipt = billing.submit_readings(signed)
            assert billing.events("ReadingRejected", receipt) == [], i
            assert len(billing.events("ReadingRecorded", receipt)) == len(times)
            if i == 0:
                billing.close_billing_period(account.address)

        node = shutil.which("node")
        assert node is not None
        path = settings.deployments_dir / f"{deployment.chain_id}.json"
        result = subprocess.run([node, str(CHECK), "--rpc", settings.chain_rpc_url, "--deployment", str(path),
                                 "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["agrees"] is True and {r["meter"] for r in report["rows"]} == {m.address for m in meters}
        assert all(r["agrees"] and r["problems"] == [] for r in report["rows"])
