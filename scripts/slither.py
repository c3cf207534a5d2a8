#!/usr/bin/env python3
"""Run Slither on both contracts through the compiler shim and hold its medium and high findings to a triage list.

Slither (``slither-analyzer``, in its own venv ``.venv-slither``: it needs a web3 older than the project's)
compiles a standard-JSON input of ``contracts/*.sol`` with the project's settings through ``scripts/solc``
(a ``solc`` front for ``scripts/solc-shim.js``). Every medium or high finding outside OpenZeppelin must be
listed, with the reason it is a false positive, in ``contracts/slither-triage.toml``; the run fails on a
finding not listed and on a listed one that no longer appears, so the list stays true. A finding is named by
its detector, where it is (``Contract.function``) and the flagged expressions, never by line numbers.

    .venv/bin/python scripts/slither.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.compiler import CONTRACT_NAME, DEMAND_RESPONSE_NAME, solc_settings  # noqa: E402
from common.settings import ROOT  # noqa: E402

TRIAGE_PATH = ROOT / "contracts" / "slither-triage.toml"
SLITHER = ROOT / ".venv-slither" / "bin" / "slither"
SOLC = ROOT / "scripts" / "solc"
#: Impacts that must be fixed or triaged; the others are only counted.
GATED = ("High", "Medium")
#: Slither needs the AST and the bytecode with its source maps of every contract.
OUTPUTS = ["abi", "metadata", "devdoc", "userdoc", "evm.bytecode.object", "evm.bytecode.sourceMap",
           "evm.deployedBytecode.object", "evm.deployedBytecode.sourceMap"]


@dataclass(frozen=True)
class Finding:
    """One medium or high Slither result, named without line numbers."""

    check: str
    impact: str
    where: str
    expressions: tuple[str, ...]
    description: str

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        """What the triage list matches: detector, place and flagged expressions."""
        return (self.check, self.where, self.expressions)

    def triage_entry(self) -> str:
        """A TOML entry for the triage list, to paste once the finding is judged a false positive."""
        lines = ["[[finding]]", f"check = {json.dumps(self.check)}", f"where = {json.dumps(self.where)}"]
        lines.append("expressions = [" + ", ".join(json.dumps(e) for e in self.expressions) + "]")
        lines.append('reason = "..."')
        return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    """A run's findings against the triage list."""

    findings: list[Finding]
    new: list[Finding]
    stale: list[dict[str, Any]]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        """True when every gated finding is listed and every listed one was found."""
        return not self.new and not self.stale


def standard_input() -> dict[str, Any]:
    """Both contracts as one standard-JSON input, with the project's compiler settings."""
    sources = {f"contracts/{name}.sol": {"content": (ROOT / "contracts" / f"{name}.sol").read_text()}
               for name in (CONTRACT_NAME, DEMAND_RESPONSE_NAME)}
    settings = {**solc_settings(), "outputSelection": {"*": {"*": OUTPUTS, "": ["ast"]}}}
    return {"language": "Solidity", "sources": sources, "settings": settings}


def run_slither(workdir: Path) -> dict[str, Any]:
    """Slither's JSON report on the contracts (its own exit code only says whether it found anything)."""
    if not SLITHER.exists():
        raise SystemExit(f"slither: {SLITHER} is missing; run scripts/bootstrap.sh")
    source = workdir / "contracts.json"
    source.write_text(json.dumps(standard_input()))
    report = workdir / "slither.json"
    cmd = [str(SLITHER), str(source), "--compile-force-framework", "solc-json", "--solc", str(SOLC),
           "--solc-working-dir", str(ROOT), "--filter-paths", "node_modules", "--json", str(report), "--disable-color"]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900, check=False)
    if not report.exists():
        raise SystemExit(f"slither: no report (exit {done.returncode}):\n{done.stderr[-4000:]}")
    data: dict[str, Any] = json.loads(report.read_text())
    if not data.get("success"):
        raise SystemExit(f"slither failed: {data.get('error')}\n{done.stderr[-4000:]}")
    return data


def _where(element: dict[str, Any]) -> str:
    """``Contract.function[.variable]`` of a result's first element."""
    names = []
    node: dict[str, Any] | None = element
    while node is not None:
        if node.get("type") != "node":
            names.append(node["name"])
        node = node.get("type_specific_fields", {}).get("parent")
    return ".".join(reversed(names))


def findings(report: dict[str, Any]) -> tuple[list[Finding], dict[str, int]]:
    """The gated findings of a report, and how many results of each impact it has."""
    results = report.get("results", {}).get("detectors", [])
    counts = dict(Counter(r["impact"] for r in results))
    gated = []
    for r in results:
        if r["impact"] not in GATED:
            continue
        elements = r.get("elements", [])
        expressions = tuple(sorted({e["name"] for e in elements if e.get("type") == "node"}))
        gated.append(Finding(r["check"], r["impact"], _where(elements[0]) if elements else "",
                             expressions, r["description"].strip()))
    return gated, counts


def load_triage(path: Path = TRIAGE_PATH) -> list[dict[str, Any]]:
    """The triage list's entries (check, where, expressions, reason)."""
    entries: list[dict[str, Any]] = tomllib.loads(path.read_text()).get("finding", [])
    for entry in entries:
        if not str(entry.get("reason", "")).strip() or entry["reason"].strip() == "...":
            raise SystemExit(f"slither: triage entry {entry.get('check')} at {entry.get('where')} gives no reason")
    return entries


def judge(found: list[Finding], counts: dict[str, int], triage: list[dict[str, Any]]) -> Verdict:
    """Compare a run's gated findings with the triage list."""
    listed = {(e["check"], e["where"], tuple(sorted(e.get("expressions", [])))) for e in triage}
    seen = {f.key for f in found}
    new = [f for f in found if f.key not in listed]
    stale = [e for e in triage if (e["check"], e["where"], tuple(sorted(e.get("expressions", [])))) not in seen]
    return Verdict(found, new, stale, counts)


def summary(verdict: Verdict) -> str:
    """The run's closing lines."""
    counts = ", ".join(f"{verdict.counts.get(i, 0)} {i.lower()}"
                       for i in ("High", "Medium", "Low", "Informational", "Optimization"))
    lines = [f"slither: {counts} (OpenZeppelin filtered out)",
             f"slither: {len(verdict.findings)} medium/high, {len(verdict.findings) - len(verdict.new)} listed as "
             f"false positives in {TRIAGE_PATH.relative_to(ROOT)}, {len(verdict.new)} new, {len(verdict.stale)} stale"]
    for f in verdict.new:
        lines += [f"NEW {f.impact} {f.check}: {f.description}", "  fix it, or list it with its reason:",
                  *("  " + line for line in f.triage_entry().splitlines())]
    for e in verdict.stale:
        lines.append(f"STALE listed {e['check']} at {e['where']} {e.get('expressions', [])}: no longer found; "
                     "remove it from the list")
    return "\n".join(lines)


def check(report_path: Path | None = None) -> Verdict:
    """Run Slither and judge its findings against the triage list."""
    with tempfile.TemporaryDirectory(prefix="slither-") as tmp:
        report = run_slither(Path(tmp))
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=1))
    found, counts = findings(report)
    return judge(found, counts, load_triage())


def main(argv: list[str] | None = None) -> int:
    """Run, print the summary, exit 1 on a new or stale finding."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write Slither's full JSON report here")
    args = parser.parse_args(argv)
    verdict = check(args.json)
    print(summary(verdict))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
