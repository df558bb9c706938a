"""Clusters of the distributed mode for the fault tests: real redis-server, API replicas and workers."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fixtures.models import build, save

from testing.distributed import Cluster, distributed_service
from testing.redis import require_redis

SLOW_SPEC = json.dumps({"rules": [{"action": "freeze", "regex": ["layer1.*"]}]})


@pytest.fixture
def make_cluster(tmp_path: Path, subprocess_env: dict[str, str],
                 postgres_url: str) -> Iterator[Callable[..., Cluster]]:
    """Start a cluster with the given settings (on a fresh PostgreSQL database); every one is stopped
    (with its Redis) at the end."""
    require_redis()
    stack: list[Any] = []

    def make(**settings: Any) -> Cluster:
        manager = distributed_service(tmp_path / f"cluster{len(stack)}", postgres_url, subprocess_env,
                                      **settings)
        cluster = manager.__enter__()
        stack.append(manager)
        return cluster

    yield make
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def slow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small file whose job takes seconds: 10,000 tensors, each a record to read and match."""
    path = tmp_path_factory.mktemp("slow") / "many.pt"
    torch.save({f"layer{i}.weight": torch.zeros(2) for i in range(10_000)}, path)
    return path


def checkpoint(tmp: Path, model: str = "seq3") -> Path:
    return save(build(model, 0), tmp / f"{model}.pt", "state_dict")


def submit(client: httpx.Client, path: Path, spec: dict[str, Any] | str, *,
           wait: float | None = None) -> httpx.Response:
    data = {"spec": spec if isinstance(spec, str) else json.dumps(spec)}
    params = {"wait": wait} if wait is not None else {}
    with open(path, "rb") as f:
        return client.post("/v1/jobs", params=params, data=data, files={"model": (path.name, f)})


def load_flags(data: bytes) -> dict[str, bool]:
    """``requires_grad`` of every tensor of a state dict the service produced, loaded the safe way."""
    return {k: bool(v.requires_grad) for k, v in torch.load(io.BytesIO(data), weights_only=True).items()}
