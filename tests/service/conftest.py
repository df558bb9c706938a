"""Real service processes on 127.0.0.1 (free port, temporary data directory) for the service tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures.modes import MODES, service_in_mode

from testing.distributed import Cluster
from testing.service import Service


@pytest.fixture
def make_server(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[Callable[..., Service]]:
    """Start a server with the given settings (two workers unless told); all are stopped at the end."""
    servers: list[Service] = []

    def make(**settings: str) -> Service:
        server = Service(tmp_path / f"data{len(servers)}", {"workers": "2", **settings}, env=subprocess_env)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]) -> Iterator[Service]:
    """A shared server for tests that do not disturb it."""
    with Service(tmp_path_factory.mktemp("service") / "data", {"workers": "2"}, env=subprocess_env) as srv:
        yield srv


@pytest.fixture(scope="module", params=MODES)
def server_any_mode(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    subprocess_env: dict[str, str]) -> Iterator[Service | Cluster]:
    """A shared server in the embedded mode, then the same tests in the distributed mode."""
    root = tmp_path_factory.mktemp(f"service-{request.param}")
    with service_in_mode(request, root, subprocess_env, workers="2") as srv:
        yield srv
