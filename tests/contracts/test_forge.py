"""Foundry's fuzz and invariant tests of both contracts (tests/contracts/forge/, foundry.toml), run offline once.

forge 1.7.1 comes from npm; it compiles as common/compiler.py does through scripts/solc and keeps its cache
and artifacts in build/forge/, so only the first run (about four minutes here) builds. Each Solidity test
is reported as a pytest test of its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any

import pytest

from common.devchain import foundry_binary
from common.settings import ROOT

FORGE_TESTS = ROOT / "tests" / "contracts" / "forge"
#: The first build compiles the contracts via IR with solc-js (minutes); the fuzz runs are bounded in foundry.toml.
FORGE_TIMEOUT = 1_500


def forge_command(*extra: str) -> list[str]:
    """``forge test`` as the suite runs it (offline, JSON results)."""
    return [str(foundry_binary("forge")), "test", "--offline", "--json", *extra]


def declared_tests() -> list[str]:
    """``Contract.function`` of every fuzz and invariant test in the Solidity test files."""
    found = []
    for path in sorted(FORGE_TESTS.glob("*.t.sol")):
        contract = ""
        for line in path.read_text().splitlines():
            if m := re.match(r"\s*contract (\w+)", line):
                contract = m.group(1)
            if m := re.match(r"\s*function ((?:test|invariant)\w*)\(", line):
                found.append(f"{contract}.{m.group(1)}")
    return found


@pytest.fixture(scope="module")
def forge_results() -> dict[str, dict[str, Any]]:
    """Every forge test's result by ``Contract.function``, from one ``forge test`` run."""
    started = time.monotonic()
    done = subprocess.run(forge_command(), cwd=ROOT, capture_output=True, text=True, timeout=FORGE_TIMEOUT,
                          env={**os.environ, "NO_COLOR": "1"}, check=False)
    elapsed = time.monotonic() - started
    start = done.stdout.find("{")
    if start < 0:
        pytest.fail(f"forge test printed no results (exit {done.returncode}):\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    suites: dict[str, Any] = json.loads(done.stdout[start:])
    results = {}
    for suite, body in suites.items():
        contract = suite.rsplit(":", 1)[-1]
        for signature, result in body["test_results"].items():
            results[f"{contract}.{signature.split('(')[0]}"] = result
    print(f"forge test: {len(results)} tests in {elapsed:.0f} s (exit {done.returncode})")
    return results


@pytest.mark.timeout(FORGE_TIMEOUT)
def test_forge_runs_every_declared_test(forge_results: dict[str, dict[str, Any]]) -> None:
    declared = declared_tests()
    assert len(declared) >= 20, declared
    assert sorted(forge_results) == sorted(declared)


@pytest.mark.timeout(FORGE_TIMEOUT)
@pytest.mark.parametrize("name", declared_tests())
def test_forge(name: str, forge_results: dict[str, dict[str, Any]]) -> None:
    result = forge_results.get(name)
    assert result is not None, f"forge did not run {name}"
    assert result["status"] == "Success", json.dumps(
        {k: result.get(k) for k in ("status", "reason", "counterexample", "decoded_logs")}, indent=1, default=str)
    kind = result.get("kind", {})
    if "Fuzz" in kind:
        assert kind["Fuzz"]["runs"] > 0
    if "Invariant" in kind:
        assert kind["Invariant"]["calls"] > 0 and kind["Invariant"].get("reverts", 0) == 0


def test_declared_tests_names_each_solidity_test() -> None:
    assert "BillingFuzzTest.testFuzz_submitReadings" in declared_tests()
    assert "BillingInvariantTest.invariant_aCreditNeverExceedsItsBound" in declared_tests()
