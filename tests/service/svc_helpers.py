"""Small helpers shared by the service tests: build real checkpoints, submit them, read artifacts."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import torch
from fixtures.models import build, save

from testing.service import wait_for

__all__ = ["checkpoint", "load_flags", "report_flags", "submit", "wait_for"]


def checkpoint(tmp: Path, model: str = "seq3", fmt: str = "state_dict", seed: int = 0) -> Path:
    suffix = ".safetensors" if fmt == "safetensors" else ".pt"
    return save(build(model, seed), tmp / f"{model}-{fmt}-{seed}{suffix}", fmt)


def submit(client: httpx.Client, path: Path, spec: dict[str, Any] | str | None = None, *,
           wait: float | None = None, dry_run: bool = False) -> httpx.Response:
    data = {"spec": spec if isinstance(spec, str) else json.dumps(spec or {})}
    if dry_run:
        data["dry_run"] = "true"
    params = {"wait": wait} if wait is not None else {}
    with open(path, "rb") as f:
        return client.post("/v1/jobs", params=params, data=data, files={"model": (path.name, f)})


def load_flags(data: bytes) -> dict[str, bool]:
    """``requires_grad`` of every tensor in a torch.save'd state dict, loaded the safe way."""
    sd = torch.load(io.BytesIO(data), weights_only=True)
    return {k: bool(v.requires_grad) for k, v in sd.items()}


def report_flags(report: dict[str, Any]) -> dict[str, bool]:
    return {p["name"]: bool(p["requires_grad"]) for p in report["parameters"]}

