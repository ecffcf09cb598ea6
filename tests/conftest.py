"""Shared fixtures (a fast digits config whose stage-1 cache lives in a temporary folder, a throwaway
local MLflow store, torch without CUDA, a PostgreSQL cluster), and the test tiers: ``make test-fast``
runs ``-m "not slow"``, and every test marked ``ray`` counts as slow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from snnconv.config import TrialConfig, apply_overrides


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects anything
def pytest_collection_modifyitems(items):
    """A test that starts Ray is slow too, so that ``-m "not slow"`` leaves it out."""
    for item in items:
        if item.get_closest_marker("ray") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def one_thread():
    """Small models run fastest on one torch thread, and far faster when other processes share the
    cores; restores the setting after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def digits_config(tmp_path) -> TrialConfig:
    """Small CNN on digits, 12 quick epochs, cache in tmp_path."""
    return apply_overrides(TrialConfig(), {
        "model": "small", "data.name": "digits", "stage1.epochs": 12, "stage1.lr": 0.05,
        "cache_dir": str(tmp_path / "cache"), "device": "cpu",
    })


@dataclass(frozen=True)
class MlflowStore:
    """A throwaway local MLflow store: the SQLite file ``mlflow.db`` in ``folder``, artifacts beside it."""

    folder: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.folder / 'mlflow.db'}"

    @property
    def artifacts(self) -> str:
        """An artifact location inside the folder, for ``create_experiment(..., artifact_location=...)``."""
        return (self.folder / "artifacts").as_uri()

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri)


@pytest.fixture
def mlflow_store(tmp_path) -> MlflowStore:
    """A fresh local MLflow store for one test, ``sqlite:///<tmp_path>/mlflow.db`` (``.uri``, ``.client()``).
    Tests that need a particular store (a server, PostgreSQL, a subprocess's own working directory) make
    their own."""
    return MlflowStore(tmp_path)


@pytest.fixture(scope="session")
def new_mlflow_store(tmp_path_factory):
    """For module-scoped fixtures: ``new_mlflow_store(name)`` makes a fresh local MLflow store in a new
    temporary folder named after ``name``."""
    def make(name: str = "mlflow") -> MlflowStore:
        return MlflowStore(tmp_path_factory.mktemp(name))
    return make


@pytest.fixture
def no_cuda(monkeypatch):
    """torch sees no CUDA, whatever this machine has (a GPU that Ray assigned but torch cannot see)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL cluster for the test session (tests/servers.py: PostgresCluster), on a free loopback
    port; each test makes its own database (``postgres.create_database(name)``). Skipped where PostgreSQL is
    not installed, unless $SNNCONV_REQUIRE_POSTGRES is set: ``.ci/run`` installs PostgreSQL and sets it, so in
    CI these tests run or fail, never skip."""
    import os

    from tests.servers import PostgresCluster, postgres_binaries

    if postgres_binaries() is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("SNNCONV_REQUIRE_POSTGRES"):
            pytest.fail(message + " and $SNNCONV_REQUIRE_POSTGRES is set")
        pytest.skip(message)
    with PostgresCluster() as cluster:
        yield cluster
