"""Deploy the contract (or reuse a recorded deployment) and grant each role to its own key."""

from __future__ import annotations

import dataclasses
import logging

from eth_account import Account

from common.chain import ChainClient, refuse_dev_keys_off_local
from common.compiler import DEMAND_RESPONSE_NAME, compile_contract
from common.deployment import ContractRecord, Deployment, deployment_path, load_deployment, save_deployment
from common.errors import ConfigError, DeploymentMissing
from common.logs import log_event
from common.settings import Settings
from common.tariff import uk_clock_changes

__all__ = ["deploy", "ROLE_SETTINGS"]

log = logging.getLogger("deploy")

#: The UK clock changes the constructor publishes (later ones: ``addClockChanges``).
CLOCK_CHANGE_YEARS = (2000, 2060)

#: Contract role constant name -> the setting holding the key that gets it.
ROLE_SETTINGS = {
    "OPERATOR_ROLE": "operator_key",
    "GATEWAY_ROLE": "gateway_key",
    "GRID_OPERATOR_ROLE": "grid_operator_key",
}

#: DemandResponse's roles: the grid operator raises events, the operator (who issues bills) settles credits.
DEMAND_RESPONSE_ROLE_SETTINGS = {
    "GRID_OPERATOR_ROLE": "grid_operator_key",
    "SETTLER_ROLE": "operator_key",
}


def _reusable(client: ChainClient, settings: Settings, chain_id: int, source_hash: str) -> Deployment | None:
    try:
        recorded = load_deployment(settings, chain_id)
    except DeploymentMissing:
        return None
    code = client.w3.eth.get_code(client.w3.to_checksum_address(recorded.address))
    if len(code) == 0:
        log_event(log, "deployment_stale", logging.WARNING, address=recorded.address,
                  reason="no code at the recorded address (chain was reset)")
        return None
    if recorded.source_hash != source_hash:
        log_event(log, "deployment_outdated", logging.WARNING, address=recorded.address,
                  reason="the contract source changed since it was deployed")
        return None
    return recorded


def deploy(settings: Settings, force: bool = False) -> tuple[Deployment, bool]:
    """Deploy unless a recorded deployment is still live; returns (deployment, deployed_now)."""
    client = ChainClient(settings)
    chain_id = client.check()
    if chain_id != settings.chain_id:
        raise ConfigError(
            f"the node at {settings.chain_rpc_url} has chain id {chain_id}, not CHAIN_ID={settings.chain_id}"
        )
    keys = [settings.admin_key, settings.operator_key, settings.gateway_key, settings.grid_operator_key]
    refuse_dev_keys_off_local(chain_id, keys)
    artifact = compile_contract(settings)
    if not force:
        recorded = _reusable(client, settings, chain_id, artifact.source_hash)
        if recorded is not None:
            log_event(log, "deployment_reused", address=recorded.address, block=recorded.block)
            if _demand_response_live(client, recorded, settings):
                return recorded, False
            recorded = _with_demand_response(client, settings, recorded)
            save_deployment(settings, recorded)
            return recorded, False

    admin = Account.from_key(settings.admin_key).address
    factory = client.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = client.transact(
        settings.admin_key,
        factory.constructor(
            admin,
            settings.tariff_unit_rate,
            settings.tariff_standing_charge,
            settings.tariff_export_rate,
            settings.max_power_w,
            settings.max_future_skew,
            uk_clock_changes(*CLOCK_CHANGE_YEARS),
        ),
        gas=8_000_000,
    )
    address = receipt["contractAddress"]
    contract = client.w3.eth.contract(address=address, abi=artifact.abi)
    roles = {"DEFAULT_ADMIN_ROLE": admin}
    for role_name, setting in ROLE_SETTINGS.items():
        holder = Account.from_key(getattr(settings, setting)).address
        role = contract.functions[role_name]().call()
        client.transact(settings.admin_key, contract.functions.grantRole(role, holder))
        roles[role_name] = holder
    deployment = Deployment(
        chain_id=chain_id,
        address=address,
        abi=artifact.abi,
        block=int(receipt["blockNumber"]),
        source_hash=artifact.source_hash,
        roles=roles,
    )
    deployment = _with_demand_response(client, settings, deployment)
    path = save_deployment(settings, deployment)
    log_event(log, "deployed", address=address, block=deployment.block, gas=receipt["gasUsed"], file=str(path))
    return deployment, True


def _demand_response_live(client: ChainClient, deployment: Deployment, settings: Settings) -> bool:
    """Whether the recorded DemandResponse is deployed from today's source."""
    record = deployment.demand_response
    if record is None or record.source_hash != compile_contract(settings, DEMAND_RESPONSE_NAME).source_hash:
        return False
    return len(client.w3.eth.get_code(client.w3.to_checksum_address(record.address))) > 0


def _with_demand_response(client: ChainClient, settings: Settings, deployment: Deployment) -> Deployment:
    """Deploy DemandResponse against the billing contract and grant its roles; the deployment with it."""
    artifact = compile_contract(settings, DEMAND_RESPONSE_NAME)
    admin = Account.from_key(settings.admin_key).address
    factory = client.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = client.transact(settings.admin_key, factory.constructor(admin, deployment.address), gas=4_000_000)
    address = receipt["contractAddress"]
    contract = client.w3.eth.contract(address=address, abi=artifact.abi)
    for role_name, setting in DEMAND_RESPONSE_ROLE_SETTINGS.items():
        role = contract.functions[role_name]().call()
        holder = Account.from_key(getattr(settings, setting)).address
        client.transact(settings.admin_key, contract.functions.grantRole(role, holder))
    log_event(log, "deployed", contract=DEMAND_RESPONSE_NAME, address=address, gas=receipt["gasUsed"])
    return dataclasses.replace(deployment, demand_response=ContractRecord(address, artifact.abi, artifact.source_hash))


def describe(settings: Settings, deployment: Deployment) -> str:
    """A one-paragraph summary for people."""
    return (
        f"SmartMeterBilling at {deployment.address} on chain {deployment.chain_id} (block {deployment.block}); "
        f"recorded in {deployment_path(settings, deployment.chain_id)}"
    )
