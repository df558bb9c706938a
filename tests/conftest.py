from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import testing.service
from testing import ROOT, child_env
from testing.postgres import PostgresCluster, find_bindir

DATABASES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database", choices=DATABASES, default=os.environ.get("LAYERFREEZE_TEST_DATABASE", "sqlite"),
        help="where the real service processes of the tests keep their records: sqlite (the data "
             "directory's file, default) or postgresql (a fresh database per service in a PostgreSQL "
             "cluster started for the session); default from LAYERFREEZE_TEST_DATABASE")


@pytest.fixture(scope="session", autouse=True)
def service_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """--database=postgresql: every ``testing.service.Service`` that names no database gets its own."""
    backend = str(request.config.getoption("--database"))
    if backend == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        testing.service.database_source = lambda: cluster.create_database("service")
    try:
        yield backend
    finally:
        testing.service.database_source = None


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


@pytest.fixture
def records_database(request: pytest.FixtureRequest, service_database: str) -> Callable[[], str]:
    """For stores opened in the test process: a function that gives the database a new store should use
    under --database: "" (the data directory's SQLite file) or a fresh PostgreSQL database."""
    if service_database == "sqlite":
        return lambda: ""
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return lambda: cluster.create_database("store")
