"""Shared fixtures: one real Ganache per test session on a free port, a fresh deployment,
and per-test isolation through ``evm_snapshot`` / ``evm_revert``; and, for the tests of
finality, reorganisations and fees, one Anvil mining a block a second, with its own deployment."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.chain import ChainClient  # noqa: E402
from common.deployer import deploy  # noqa: E402
from common.deployment import Deployment  # noqa: E402
from common.devchain import AnvilProcess, GanacheProcess  # noqa: E402
from common.devpg import DevPostgres  # noqa: E402
from common.settings import Settings, load_settings  # noqa: E402


@pytest.fixture(scope="session")
def ganache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GanacheProcess]:
    """A real Ganache on 127.0.0.1 with its own database, for the whole session."""
    base = tmp_path_factory.mktemp("ganache")
    chain = GanacheProcess(base / "db", log_path=base / "ganache.log").start()
    yield chain
    chain.stop()


@pytest.fixture(scope="session")
def base_settings(ganache: GanacheProcess, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the session's Ganache, with every directory under a temp dir."""
    base = tmp_path_factory.mktemp("settings")
    return load_settings(
        env_file=base / "no.env",
        chain_rpc_url=ganache.rpc_url,
        chain_ws_url=ganache.ws_url,
        deployments_dir=base / "deployments",
        data_dir=base / "data",
    )


@pytest.fixture(scope="session")
def deployment(base_settings: Settings) -> Deployment:
    """The contract deployed once per session."""
    dep, _ = deploy(base_settings, force=True)
    return dep


#: Anvil's block time in the tests: short, so that blocks turn final within seconds.
ANVIL_BLOCK_TIME = 1.0
#: Blocks on top before a block counts as final in the tests on Anvil.
ANVIL_CONFIRMATIONS = 2


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilProcess]:
    """A real Anvil on 127.0.0.1 mining a block every second, for the whole session (started on first use)."""
    base = tmp_path_factory.mktemp("anvil")
    node = AnvilProcess(base / "chain", log_path=base / "anvil.log", block_time=ANVIL_BLOCK_TIME).start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def anvil_settings(anvil: AnvilProcess, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the session's Anvil: two confirmations, quick replacement of waiting transactions."""
    base = tmp_path_factory.mktemp("anvil-settings")
    return load_settings(
        env_file=base / "no.env",
        chain_rpc_url=anvil.rpc_url,
        chain_ws_url=anvil.ws_url,
        deployments_dir=base / "deployments",
        data_dir=base / "data",
        confirmations=ANVIL_CONFIRMATIONS,
        tx_replace_after=2.0,
    )


@pytest.fixture(scope="session")
def anvil_deployment(anvil_settings: Settings) -> Deployment:
    """The contract deployed once per session on Anvil."""
    dep, _ = deploy(anvil_settings, force=True)
    return dep


@pytest.fixture(scope="session")
def chain(base_settings: Settings) -> ChainClient:
    """A synchronous chain client for the session's Ganache."""
    return ChainClient(base_settings)


@pytest.fixture
def snapshot(chain: ChainClient, deployment: Deployment) -> Iterator[None]:
    """Revert the chain to its state before the test (contract tests stay independent)."""
    snap = chain.w3.provider.make_request("evm_snapshot", [])["result"]
    yield
    chain.w3.provider.make_request("evm_revert", [snap])
    chain._nonces.clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[DevPostgres]:
    """A PostgreSQL cluster of this test process's own (a temp folder, a free port, an unprivileged account),
    started on first use and stopped at the end of the session."""
    try:
        cluster = DevPostgres()
    except RuntimeError as err:
        pytest.fail(str(err))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def index_backend(request: pytest.FixtureRequest) -> str:
    """The index's engine for this test: ``sqlite`` unless the test asks for both (``tests.support.both_indexes``)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def new_index_url(index_backend: str, request: pytest.FixtureRequest) -> Callable[[], str]:
    """``INDEX_URL`` for a new, empty index of the test's engine: "" (SQLite, under the data directory) or a
    fresh database in the session's PostgreSQL cluster."""
    if index_backend == "sqlite":
        return lambda: ""
    cluster: DevPostgres = request.getfixturevalue("postgres")
    return lambda: cluster.create_database(f"index_{uuid.uuid4().hex[:16]}")


@pytest.fixture(autouse=True)
def _no_leaked_server_processes() -> Iterator[None]:
    """Kill any ``python -m server`` child a test started and did not stop."""
    yield
    from tests.support import ServerProcess

    ServerProcess.kill_all()
