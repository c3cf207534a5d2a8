"""Deployment (common.deployer, behind scripts/deploy.py): reuse of a live recorded deployment,
redeployment when the record is stale, the deployment file, the dev-key guard and the compile cache."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import solcx
from eth_account import Account
from eth_utils import keccak

from common import compiler
from common.chain import ChainClient, refuse_dev_keys_off_local
from common.compiler import compile_contract
from common.deployer import deploy
from common.deployment import Deployment, load_deployment, save_deployment
from common.errors import ConfigError
from common.settings import GANACHE_DEV_KEYS, Settings

OWN_KEYS = ["0x" + f"{i:02x}" * 32 for i in range(1, 5)]


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path, snapshot: None) -> Settings:
    """Session settings with an empty deployments directory, on a chain reverted after the test."""
    return base_settings.replace(deployments_dir=tmp_path / "deployments")


def _recorded_file(settings: Settings) -> dict:
    return json.loads((settings.deployments_dir / "1337.json").read_text())


def test_deploy_reuses_a_recorded_deployment_whose_code_is_live(
    settings: Settings, deployment: Deployment, chain: ChainClient
) -> None:
    save_deployment(settings, deployment)
    block_before = chain.w3.eth.block_number
    reused, deployed_now = deploy(settings)
    assert deployed_now is False
    assert reused == deployment
    assert chain.w3.eth.block_number == block_before


def test_deploy_with_nothing_recorded_deploys_and_writes_the_deployment_file(
    settings: Settings, chain: ChainClient
) -> None:
    fresh, deployed_now = deploy(settings)
    assert deployed_now is True
    recorded = _recorded_file(settings)
    receipt_block = chain.w3.eth.get_transaction_receipt(
        chain.w3.eth.get_block(recorded["block"])["transactions"][0]
    )
    assert recorded["address"] == fresh.address == receipt_block["contractAddress"]
    assert recorded["block"] == fresh.block
    assert recorded["abi"] == compile_contract(settings).abi
    assert recorded["chainId"] == 1337
    assert recorded["eip712"]["verifyingContract"] == fresh.address
    assert len(chain.w3.eth.get_code(fresh.address)) > 0
    assert load_deployment(settings) == fresh


def test_deploy_grants_each_role_to_its_configured_key(settings: Settings, chain: ChainClient) -> None:
    fresh, _ = deploy(settings)
    contract = chain.contract(fresh)
    for role, key in [
        ("OPERATOR_ROLE", settings.operator_key),
        ("GATEWAY_ROLE", settings.gateway_key),
        ("GRID_OPERATOR_ROLE", settings.grid_operator_key),
    ]:
        holder = Account.from_key(key).address
        assert contract.functions.hasRole(keccak(text=role), holder).call() is True
        assert fresh.roles[role] == holder
    admin = Account.from_key(settings.admin_key).address
    assert contract.functions.hasRole(bytes(32), admin).call() is True
    assert contract.functions.hasRole(keccak(text="OPERATOR_ROLE"), admin).call() is False


def test_deploy_redeploys_when_the_recorded_address_has_no_code(
    settings: Settings, deployment: Deployment, chain: ChainClient
) -> None:
    vanished = Account.create().address
    save_deployment(settings, dataclasses.replace(deployment, address=vanished))
    fresh, deployed_now = deploy(settings)
    assert deployed_now is True
    assert fresh.address not in (vanished, deployment.address)
    assert len(chain.w3.eth.get_code(fresh.address)) > 0
    assert _recorded_file(settings)["address"] == fresh.address


def test_deploy_redeploys_when_the_contract_source_changed_since_the_recorded_deployment(
    settings: Settings, deployment: Deployment
) -> None:
    save_deployment(settings, dataclasses.replace(deployment, source_hash="0000000000000000"))
    fresh, deployed_now = deploy(settings)
    assert deployed_now is True
    assert fresh.address != deployment.address
    assert fresh.source_hash == deployment.source_hash


def test_deploy_refuses_a_node_whose_chain_id_differs_from_the_settings(settings: Settings) -> None:
    with pytest.raises(ConfigError) as excinfo:
        deploy(settings.replace(chain_id=5))
    assert "CHAIN_ID=5" in excinfo.value.message
    assert not (settings.deployments_dir / "5.json").exists()


@pytest.mark.parametrize("chain_id", [1, 5, 11155111])
def test_ganache_dev_keys_are_refused_on_any_chain_id_but_1337(chain_id: int) -> None:
    with pytest.raises(ConfigError) as excinfo:
        refuse_dev_keys_off_local(chain_id, [OWN_KEYS[0], GANACHE_DEV_KEYS[2]])
    assert excinfo.value.code == "config_error"
    assert f"chain id {chain_id}" in excinfo.value.message


def test_ganache_dev_keys_are_refused_whatever_their_letter_case() -> None:
    with pytest.raises(ConfigError):
        refuse_dev_keys_off_local(1, [GANACHE_DEV_KEYS[0].upper().replace("0X", "0x")])


def test_ganache_dev_keys_are_allowed_on_the_local_chain_and_own_keys_everywhere() -> None:
    refuse_dev_keys_off_local(1337, list(GANACHE_DEV_KEYS))
    refuse_dev_keys_off_local(1, OWN_KEYS)


def test_compiled_artifact_is_cached_in_the_build_dir_by_source_hash(
    base_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = compile_contract(base_settings)
    cache = base_settings.build_dir / f"SmartMeterBilling-{artifact.source_hash}.json"
    assert json.loads(cache.read_text()) == dataclasses.asdict(artifact)

    def no_compiler(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again instead of using the cache")

    monkeypatch.setattr(solcx, "compile_standard", no_compiler)
    assert compile_contract(base_settings) == artifact


def test_changed_source_misses_the_cache_and_is_compiled_once(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = compile_contract(base_settings)
    changed = tmp_path / "SmartMeterBilling.sol"
    changed.write_text(compiler.SOURCE_PATH.read_text() + "\n// changed\n")
    calls: list[dict] = []

    def fake_compile(standard_input: dict, **kwargs: object) -> dict:
        calls.append(standard_input)
        output = {"abi": [], "evm": {"bytecode": {"object": "00"}, "deployedBytecode": {"object": "00"}}}
        return {"contracts": {"contracts/SmartMeterBilling.sol": {"SmartMeterBilling": output}}}

    monkeypatch.setattr(compiler, "SOURCE_PATH", changed)
    monkeypatch.setattr(solcx, "compile_standard", fake_compile)
    settings = base_settings.replace(build_dir=tmp_path / "build")
    first = compile_contract(settings)
    second = compile_contract(settings)
    assert first.source_hash != original.source_hash
    assert second == first
    assert len(calls) == 1
    assert calls[0]["sources"]["contracts/SmartMeterBilling.sol"]["content"].endswith("// changed\n")
    assert [p.name for p in settings.build_dir.iterdir()] == [f"SmartMeterBilling-{first.source_hash}.json"]
