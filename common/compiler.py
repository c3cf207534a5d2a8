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

__all__ = ["Artifact", "compile_contract", "solc_settings", "stage_artifacts", "uncompiled", "CONTRACT_NAME",
           "DEMAND_RESPONSE_NAME", "SOURCE_PATH"]

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
    """What a contract's imports depend on: the OpenZeppelin release and every source in ``contracts/``."""
    oz = ROOT / "node_modules" / "@openzeppelin" / "contracts" / "package.json"
    local = "".join(path.read_text() for path in sorted((ROOT / "contracts").glob("*.sol")))
    return (oz.read_text() if oz.exists() else "") + local


def _digest(settings: Settings, name: str, root: Path = ROOT) -> tuple[str, dict[str, Any], str]:
    """(the cache key of ``name`` compiled in a checkout at ``root``, its compiler input, the compiler)."""
    source = (SOURCE_PATH if name == CONTRACT_NAME else ROOT / "contracts" / f"{name}.sol").read_text()
    binary = _solc_binary(settings)
    standard_input = _standard_input(source, name)
    named = str(root / SHIM_PATH.relative_to(ROOT)) if binary == str(SHIM_PATH) else binary
    digest = hashlib.sha256(
        (source + json.dumps(standard_input["settings"], sort_keys=True) + named + _imports_hash()).encode()
    ).hexdigest()[:16]
    return digest, standard_input, binary


def stage_artifacts(settings: Settings, build_dir: Path, root: Path) -> list[Path]:
    """Compile the contracts here (or take them from the cache) and write them into ``build_dir`` under the names
    a checkout at ``root`` looks for (a container image's ``/app``), so that it needs no compiler run."""
    written = []
    for name in (CONTRACT_NAME, DEMAND_RESPONSE_NAME):
        artifact = compile_contract(settings, name)
        digest = _digest(settings, name, root)[0]
        build_dir.mkdir(parents=True, exist_ok=True)
        path = build_dir / f"{name}-{digest}.json"
        path.write_text(json.dumps({**artifact.__dict__, "source_hash": digest}))
        written.append(path)
    return written


def uncompiled(settings: Settings) -> list[str]:
    """The contracts ``compile_contract`` would have to compile (not in ``BUILD_DIR``'s cache)."""
    return [name for name in (CONTRACT_NAME, DEMAND_RESPONSE_NAME)
            if not (settings.build_dir / f"{name}-{_digest(settings, name)[0]}.json").exists()]


def compile_contract(settings: Settings, name: str = CONTRACT_NAME) -> Artifact:
    """Compile (or load from the cache) the billing contract, or another in ``contracts/`` by name."""
    digest, standard_input, binary = _digest(settings, name)
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


if __name__ == "__main__":  # scripts/docker-images.sh and the app image's build
    import sys

    from common.settings import load_settings

    if len(sys.argv) == 4 and sys.argv[1] == "stage":  # stage BUILD_DIR ROOT
        for staged in stage_artifacts(load_settings(), Path(sys.argv[2]), Path(sys.argv[3])):
            print(staged)
    elif sys.argv[1:] == ["check"]:
        missing = uncompiled(load_settings())
        if missing:
            raise SystemExit(f"not compiled in BUILD_DIR: {', '.join(missing)} (run python -m common.compiler stage)")
    else:
        raise SystemExit("usage: python -m common.compiler stage BUILD_DIR ROOT | check")
