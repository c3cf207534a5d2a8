"""The recorded deployment of the contract: ``deployments/<chainId>.json``.

The file holds ``address``, ``abi``, ``block``, ``chainId``, ``sourceHash``, the role holders
and the EIP-712 domain, so any client (in any language) can find the contract from it alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.eip712 import DEMAND_RESPONSE_DOMAIN_NAME, Domain
from common.errors import DeploymentMissing
from common.settings import Settings

__all__ = ["ContractRecord", "Deployment", "deployment_path", "load_deployment", "save_deployment"]


@dataclass(frozen=True)
class ContractRecord:
    """A contract deployed beside the billing one (demand response): where it is and its ABI."""

    address: str
    abi: list[dict[str, Any]]
    source_hash: str

    def to_json(self) -> dict[str, Any]:
        """The record's JSON form inside the deployment file."""
        return {"address": self.address, "sourceHash": self.source_hash, "abi": self.abi}


@dataclass(frozen=True)
class Deployment:
    """Where the contract lives on one chain and how to talk to it."""

    chain_id: int
    address: str
    abi: list[dict[str, Any]]
    block: int
    source_hash: str
    roles: dict[str, str]
    #: The DemandResponse contract, or None on a deployment made before it existed.
    demand_response: ContractRecord | None = None

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain readings must be signed under for this deployment."""
        return Domain(self.chain_id, self.address)

    @property
    def demand_response_domain(self) -> Domain:
        """The EIP-712 domain meters sign demand-response opt-outs under (DeploymentMissing without it)."""
        if self.demand_response is None:
            raise DeploymentMissing("this deployment has no DemandResponse contract; run: .venv/bin/python "
                                    "scripts/deploy.py")
        return Domain(self.chain_id, self.demand_response.address, DEMAND_RESPONSE_DOMAIN_NAME)

    def to_json(self) -> dict[str, Any]:
        """The file's JSON form."""
        data = {
            "chainId": self.chain_id,
            "address": self.address,
            "block": self.block,
            "sourceHash": self.source_hash,
            "roles": self.roles,
            "eip712": self.domain.as_dict(),
            "abi": self.abi,
        }
        if self.demand_response is not None:
            data["demandResponse"] = self.demand_response.to_json()
        return data


def deployment_path(settings: Settings, chain_id: int | None = None) -> Path:
    """The deployment file for ``chain_id`` (default: the configured chain)."""
    return settings.deployments_dir / f"{chain_id or settings.chain_id}.json"


def load_deployment(settings: Settings, chain_id: int | None = None) -> Deployment:
    """Read the recorded deployment, or raise DeploymentMissing saying what to run."""
    path = deployment_path(settings, chain_id)
    if not path.exists():
        raise DeploymentMissing(f"no deployment recorded at {path}; run: .venv/bin/python scripts/deploy.py")
    data = json.loads(path.read_text())
    dr = data.get("demandResponse")
    return Deployment(
        chain_id=int(data["chainId"]),
        address=data["address"],
        abi=data["abi"],
        block=int(data["block"]),
        source_hash=data.get("sourceHash", ""),
        roles=data.get("roles", {}),
        demand_response=None if dr is None else ContractRecord(dr["address"], dr["abi"], dr.get("sourceHash", "")),
    )


def save_deployment(settings: Settings, deployment: Deployment) -> Path:
    """Write the deployment file atomically."""
    path = deployment_path(settings, deployment.chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(deployment.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path
