"""Compile the contract through py-solc-x, cached by source hash in the build directory.

py-solc-x cannot download compilers offline, so by default it drives the npm ``solc``
package through ``scripts/solc-shim.js``. A native ``solc`` named by ``SOLC_BINARY`` wins.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx

from common.errors import ConfigError
from common.settings import ROOT, Settings

__all__ = [
    "Artifact", "compile_contract", "solc_settings", "CONTRACT_NAME", "DEMAND_RESPONSE_NAME", "SOURCE_PATH",
]

CONTRACT_NAME = "SmartMeterBilling"
SOURCE_PATH = ROOT / "contracts" / f"{CONTRACT_NAME}.sol"
#: The demand-response contract, compiled and deployed beside the billing one.
DEMAND_RESPONSE_NAME = "DemandResponse"
SHIM_PATH = ROOT / "scripts" / "solc-shim.js"
EVM_VERSION = "shanghai"


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: ABI, creation bytecode and deployed bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    runtime_bytecode: str
    source_hash: str


def solc_settings() -> dict[str, Any]:
    """The compiler settings the contracts are built with (foundry.toml and scripts/slither.py match them)."""
    return {"evmVersion": EVM_VERSION, "viaIR": True, "optimizer": {"enabled": True, "runs": 10_000}}


def _standard_input(source: str, name: str) -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {f"contracts/{name}.sol": {"content": source}},
        "settings": {
            **solc_settings(),
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }


def _solc_binary(settings: Settings) -> str:
    if settings.solc_binary:
        if not Path(settings.solc_binary).exists():
            raise ConfigError(f"SOLC_BINARY={settings.solc_binary} does not exist")
        return settings.solc_binary
    if not (ROOT / "node_modules" / "solc").exists():
        raise ConfigError("the npm solc compiler is missing; run scripts/bootstrap.sh")
    return str(SHIM_PATH)


def _imports_hash() -> str:
    oz = ROOT / "node_modules" / "@openzeppelin" / "contracts" / "package.json"
    return oz.read_text() if oz.exists() else ""


def compile_contract(settings: Settings, name: str = CONTRACT_NAME) -> Artifact:
    """Compile (or load from the cache) the billing contract, or another in ``contracts/`` by name."""
    source = (SOURCE_PATH if name == CONTRACT_NAME else ROOT / "contracts" / f"{name}.sol").read_text()
    binary = _solc_binary(settings)
    standard_input = _standard_input(source, name)
    digest = hashlib.sha256(
        (source + json.dumps(standard_input["settings"], sort_keys=True) + binary + _imports_hash()).encode()
    ).hexdigest()[:16]
    cache = settings.build_dir / f"{name}-{digest}.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        return Artifact(**data)
    output = solcx.compile_standard(standard_input, solc_binary=binary, allow_paths=[str(ROOT)])
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ConfigError("contract compilation failed:\n" + "\n".join(e["formattedMessage"] for e in errors))
    contract = output["contracts"][f"contracts/{name}.sol"][name]
    artifact = Artifact(
        name=name,
        abi=contract["abi"],
        bytecode="0x" + contract["evm"]["bytecode"]["object"],
        runtime_bytecode="0x" + contract["evm"]["deployedBytecode"]["object"],
        source_hash=digest,
    )
    settings.build_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # processes compiling at once each write their own
    tmp.write_text(json.dumps(artifact.__dict__))
    tmp.replace(cache)
    return artifact
