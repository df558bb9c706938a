"""Tiny transformers models saved as sharded directories (3+ shards, safetensors and .bin), frozen through
the service by hand (multipart form), by the client (resumable uploads and a delta rebuild), by the client
CLI and by the local CLI: the same bytes every way, loadable by ``from_pretrained``, ``apply()`` giving
the report's states, and AdamW steps leaving the frozen parameters bit-identical."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fixtures.server import running_service
from layerfreeze.cli.main import main as local_cli
from layerfreeze_client import Client, apply
from layerfreeze_client.cli import main as client_cli

from multifile.hf import model_class, save_sharded, tiny_model
from multifile.test_directory import FORMATS, KINDS, SPECS, shard_tensors
from multifile.test_service import directory_files, upload

CASES = list(itertools.product(KINDS, FORMATS, sorted(SPECS)))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("multifile-through"), subprocess_env, workers="1") as base:
        yield base


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("hf-through")
    out = {}
    for kind in KINDS:
        model = tiny_model(kind)
        for fmt in FORMATS:
            out[kind, fmt] = save_sharded(model, root / f"{kind}-{fmt}", fmt)
    return out


def cli_rules(rule: dict[str, Any]) -> list[str] | None:
    """The client CLI's --freeze flags for a rule, or None when only a spec file says it (children)."""
    flags: list[str] = []
    for kind, values in rule.items():
        if kind == "children":
            return None
        flags += [v if kind == "names" else f"{kind}:{v}" for v in values]
    return flags if len({k for k in rule}) == 1 else None  # one flag's patterns are alternatives


def by_hand(client: httpx.Client, src: Path, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Multipart upload, a job on the stored model, every file downloaded from /files/{path}."""
    r = upload(client, directory_files(src))
    assert r.status_code in (200, 201), r.text
    r = client.post("/v1/jobs?wait=60", json={"model": r.json()["id"], "spec": spec})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    job = r.json()
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    for entry in report["files"]["files"]:
        r = client.get(f"/v1/jobs/{job['id']}/files/{entry['path']}")
        assert r.status_code == 200 and r.headers["etag"] == f'"{entry["sha256"]}"'
        (out / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        (out / entry["path"]).write_bytes(r.content)
    return report


@pytest.mark.parametrize(("kind", "fmt", "how"), CASES, ids=["-".join(c) for c in CASES])
def test_every_way_gives_the_same_directory_that_loads_and_trains(
        url: str, models: dict[tuple[str, str], Path], tmp_path: Path, kind: str, fmt: str, how: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    src = models[kind, fmt]
    assert len([f for f in src.iterdir() if f.suffix in (".bin", ".safetensors")]) >= 3
    rule = SPECS[how][kind]
    spec = {"rules": [{"action": "freeze", **rule}]}

    with httpx.Client(base_url=url, timeout=120) as http:
        report = by_hand(http, src, spec, tmp_path / "by-hand")
    with Client(url) as client:
        result = client.freeze(src, spec, tmp_path / "client", progress=False)
    assert result.output == tmp_path / "client"
    assert {p.name: p.requires_grad for p in result.report.parameters} == {
        p["name"]: p["requires_grad"] for p in report["parameters"]}

    flags = cli_rules(rule)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    how_args = ["--freeze", *flags] if flags else ["--spec", str(spec_file)]
    assert client_cli(["--url", url, "--no-progress", "freeze", str(src), *how_args,
                       "-o", str(tmp_path / "client-cli")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert local_cli(["freeze", str(src), "--spec", str(spec_file), "-o", str(tmp_path / "local-cli")]) == 0

    # the same bytes every way; unchanged files byte-identical to the input
    expected = directory_files(tmp_path / "by-hand")
    assert sorted(expected) == sorted(directory_files(src))
    for way in ("client", "client-cli", "local-cli"):
        assert directory_files(tmp_path / way) == expected, way
    changed = {f["path"] for f in report["files"]["files"] if f["changed"]}
    for path, data in directory_files(src).items():
        if path not in changed:
            assert expected[path] == data, path
    assert "config.json" not in changed

    # every tensor byte-identical
    out = tmp_path / "client"
    before, after = shard_tensors(src), shard_tensors(out)
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert tensor.dtype == after[name].dtype
        assert tensor.view(torch.uint8).equal(after[name].view(torch.uint8)), name

    # from_pretrained + apply give exactly the report's states
    states = {p["name"]: p["requires_grad"] for p in report["parameters"]}
    assert 0 < sum(not v for v in states.values()) < len(states)
    model = model_class(kind).from_pretrained(out)
    assert apply(model, out) is not None
    assert {n: p.requires_grad for n, p in model.named_parameters()} == states

    # AdamW steps leave the frozen parameters bit-identical (and move the trainable ones)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        model(input_ids=torch.randint(0, 64, (2, 8))).last_hidden_state.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        if n in frozen:
            assert p.detach().view(torch.uint8).equal(frozen[n].view(torch.uint8)), n
    assert any(not p.detach().equal(trainable[n]) for n, p in model.named_parameters() if n in trainable)
