"""Shared fixtures (a fast digits config whose stage-1 cache lives in a temporary folder), and the
test tiers: ``make test-fast`` runs ``-m "not slow"``, and every test marked ``ray`` counts as slow."""

from __future__ import annotations

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
