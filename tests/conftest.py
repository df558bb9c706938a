from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing import ROOT, child_env
from testing.postgres import PostgresCluster, find_bindir


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for child processes (servers, CLIs) that must import this checkout's code."""
    return child_env({"LAYERFREEZE_TEST_PYTHON": sys.executable})


def _postgres_missing(why: str) -> None:
    """Skip without PostgreSQL's server binaries; under CI they are required (``.ci/run`` installs them)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required under CI: {why}")
    pytest.skip(f"PostgreSQL server binaries not found ({why}); install the 'postgresql' package")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster on 127.0.0.1 for the whole session (``testing.postgres``)."""
    if find_bindir() is None:
        _postgres_missing("no initdb under /usr/lib/postgresql/*/bin or on PATH")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database in the session's cluster; dropped afterwards."""
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each record-store test on both dialects: "" (SQLite in the data directory) and a fresh PostgreSQL
    database."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_url"))
