"""The preview's columnar view (``?view=columns``) says what the full preview says, aligned to the model's
report, in every format, for tied parameters and for a model directory; the full preview is unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.models import FORMATS, build, save
from torch import nn

from models.conftest import client

SPECS: list[dict[str, Any]] = [
    {},
    {"rules": [{"action": "freeze", "regex": [".*"]}, {"action": "unfreeze", "params": ["bias"]}]},
    {"rules": [{"action": "freeze", "names": ["0", "conv1", "embed", "1"]}], "strict": False},
    {"rules": [{"action": "freeze", "names": ["nope"]}], "strict": False},
]


class Tied(nn.Module):
    """An embedding tied to the head, and twelve blocks (names that sort differently as text)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 3)
        self.blocks = nn.Sequential(*[nn.Linear(3, 3) for _ in range(12)])
        self.head = nn.Linear(3, 7, bias=False)
        self.head.weight = self.embed.weight


def expand(runs: list[list[int]], count: int) -> list[int | None]:
    out: list[int | None] = [None] * count
    for first, n, rule in runs:
        out[first:first + n] = [rule] * n
    return out


def check_columns(c: Any, model_id: str, spec: dict[str, Any]) -> None:
    full = c.post(f"/v1/models/{model_id}/preview", json=spec)
    cols = c.post(f"/v1/models/{model_id}/preview", params={"view": "columns"}, json=spec)
    assert full.status_code == cols.status_code == 200, (full.text, cols.text)
    full, cols = full.json(), cols.json()
    base = c.get(f"/v1/models/{model_id}/report").json()
    assert "view" not in full and cols["view"] == "columns"
    for key in ("format", "input", "spec", "spec_sha256", "summary", "rules", "warnings"):
        assert cols[key] == full[key], key
    # Aligned to the model's report, which a page reads once: the same parameters and modules, in order.
    assert [p["name"] for p in base["parameters"]] == [p["name"] for p in full["parameters"]]
    assert [m["path"] for m in base["modules"]] == [m["path"] for m in full["modules"]]
    params, modules = cols["parameters"], cols["modules"]
    assert params["count"] == len(full["parameters"]) == len(params["requires_grad"])
    assert params["requires_grad"] == "".join("1" if p["requires_grad"] else "0" for p in full["parameters"])
    assert expand(params["decided_by"], params["count"]) == [p["rule"] for p in full["parameters"]]
    assert modules["count"] == len(full["modules"])
    assert modules["trainable"] == [m["trainable"] for m in full["modules"]]
    assert modules["numel_trainable"] == [m["numel_trainable"] for m in full["modules"]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_columns_match_the_full_preview(service, tmp_path: Path, fmt: str) -> None:
    url, _data = service
    with client(url) as c:
        for name in ("cnn", "transformer"):
            path = save(build(name), tmp_path / f"{name}.{'safetensors' if fmt == 'safetensors' else 'pt'}",
                        fmt)
            with path.open("rb") as f:
                r = c.post("/v1/models", files={"file": (path.name, f)})
            assert r.status_code in (200, 201), r.text
            for spec in SPECS:
                check_columns(c, r.json()["id"], spec)


def test_columns_of_tied_parameters_and_natural_order(service, tmp_path: Path) -> None:
    """A tied weight counts once per module; safetensors names sort naturally (2 before 10)."""
    with client(service[0]) as c:
        for path in (tmp_path / "tied.pt", tmp_path / "wide.safetensors"):
            save(Tied(), path, "module" if path.suffix == ".pt" else "safetensors")
            with path.open("rb") as f:
                model_id = c.post("/v1/models", files={"file": (path.name, f)}).json()["id"]
            for spec in (*SPECS, {"rules": [{"action": "freeze", "names": ["head", "blocks.1*"]}]}):
                check_columns(c, model_id, spec)


def test_columns_of_a_model_directory(service, tmp_path: Path) -> None:
    from multifile.hf import save_sharded, tiny_model

    directory = save_sharded(tiny_model("bert"), tmp_path / "bert", "safetensors")
    parts = [("file", (f.relative_to(directory).as_posix(), f.read_bytes(), "application/octet-stream"))
             for f in sorted(directory.rglob("*")) if f.is_file()]
    with client(service[0]) as c:
        r = c.post("/v1/models", files=parts)
        assert r.status_code in (200, 201), r.text
        for spec in (*SPECS, {"rules": [{"action": "freeze", "names": ["embeddings", "encoder.layer.0"]}]}):
            check_columns(c, r.json()["id"], spec)


def test_columns_answer_problems_as_the_full_preview_does(service, tmp_path: Path) -> None:
    path = save(build("cnn"), tmp_path / "cnn.pt", "module")
    with client(service[0]) as c, path.open("rb") as f:
        model_id = c.post("/v1/models", files={"file": (path.name, f)}).json()["id"]
        spec = {"rules": [{"action": "freeze", "names": ["conv9"]}]}
        full = c.post(f"/v1/models/{model_id}/preview", json=spec)
        cols = c.post(f"/v1/models/{model_id}/preview?view=columns", json=spec)
        assert full.status_code == cols.status_code == 422
        assert full.json()["errors"] == cols.json()["errors"]
        bad = c.post(f"/v1/models/{model_id}/preview?view=rows", json={})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
