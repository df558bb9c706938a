"""Each class of disagreement with torch's loader, through the real server: POST /v1/jobs with the
file gives a 422 problem+json naming the ambiguity, or a job whose artifact loads as the report says."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fixtures.server import running_service
from layerfreeze_client import apply

from conformance import hostile

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("truth"), subprocess_env, workers="2") as base:
        yield base


def _submit(url: str, path: Path, spec: dict[str, Any] | None = None) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as c, open(path, "rb") as f:
        return c.post("/v1/jobs", params={"wait": 30}, data={"spec": json.dumps(spec or {})},
                      files={"model": (path.name, f)})


def _get(url: str, link: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as c:
        return c.get(link)


REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "case-shadowed data.pkl": (hostile.case_shadowed, "zip-duplicate-member"),
    "state replacing data": (hostile.state_sets_data, "pickled-state"),
    "storage with two dtypes": (hostile.storage_two_dtypes, "storage-reuse"),
    "TorchScript declaration in a comment": (
        lambda tmp: hostile.torchscript_code(tmp, hostile.commented_decl), "torchscript-code"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_ambiguous_upload_is_422_naming_the_ambiguity(url: str, tmp_path: Path, case: str) -> None:
    build, ambiguity = REFUSED[case]
    r = _submit(url, build(tmp_path))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/ambiguous-checkpoint") and body["ambiguity"] == ambiguity
    assert "ambiguous" in body["detail"]


def test_shadow_pickle_that_would_run_code_is_refused_and_never_runs(url: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    r = _submit(url, hostile.case_shadowed(tmp_path, marker))
    assert r.status_code == 422 and r.json()["ambiguity"] == "zip-duplicate-member"
    time.sleep(0.2)
    assert not marker.exists()


def test_hash_dag_and_deep_names_are_refused_quickly(url: str, tmp_path: Path) -> None:
    for path, limit in ((hostile.hash_dag(tmp_path), None), (hostile.deep_name(tmp_path), "max_name")):
        t0 = time.monotonic()
        r = _submit(url, path)
        assert r.status_code == 422, r.text
        assert time.monotonic() - t0 < 10
        if limit:
            assert r.json()["limit"].startswith(limit)
    assert _get(url, "/healthz").status_code == 200


def _artifact_flags(url: str, job: dict[str, Any]) -> dict[str, bool]:
    data = _get(url, job["links"]["artifact"]).content
    sd = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    return {k: bool(v.requires_grad) for k, v in sd.items()}


def _report(url: str, job: dict[str, Any]) -> dict[str, Any]:
    return _get(url, job["links"]["report"]).json()


def test_state_requires_grad_is_frozen_for_real(url: str, tmp_path: Path) -> None:
    r = _submit(url, hostile.state_requires_grad(tmp_path),
                {"rules": [{"action": "freeze", "names": ["layer.weight"]}]})
    assert r.status_code == 200, r.text
    report = _report(url, r.json())
    flags = {p["name"]: p["requires_grad"] for p in report["parameters"]}
    assert flags == {"layer.weight": False, "layer.bias": True}
    assert _artifact_flags(url, r.json()) == flags


def test_reindented_torchscript_reports_what_jit_load_trains(url: str, tmp_path: Path) -> None:
    path = hostile.torchscript_code(tmp_path, hostile.reindented)
    r = _submit(url, path, {"rules": [{"action": "freeze", "names": ["encoder.**"]}]})
    assert r.status_code == 200, r.text
    flags = {p["name"]: p["requires_grad"] for p in _report(url, r.json())["parameters"]}
    out = tmp_path / "out.pt"
    out.write_bytes(_get(url, r.json()["links"]["artifact"]).content)
    scripted = torch.jit.load(str(out))
    assert {n: p.requires_grad for n, p in scripted.named_parameters()} == flags
    assert not flags["encoder.0.weight"] and flags["norm.weight"]


def test_old_rebuild_tensor_is_accepted_with_a_warning(url: str, tmp_path: Path) -> None:
    r = _submit(url, hostile.old_rebuild(tmp_path, legacy=True))
    assert r.status_code == 200, r.text
    report = _report(url, r.json())
    assert {p["requires_grad"] for p in report["parameters"]} == {False}
    assert any(w["code"] == "requires_grad_not_recordable" for w in report["warnings"])
    assert set(_artifact_flags(url, r.json()).values()) == {False}


def test_apply_and_service_pick_the_same_dict(url: str, tmp_path: Path) -> None:
    path, model = hostile.two_model_dicts(tmp_path)
    r = _submit(url, path, {"rules": [{"action": "freeze", "names": ["0.**"]}]})
    assert r.status_code == 200, r.text
    report = _report(url, r.json())
    assert report["prefix"] == "model_state"
    out = tmp_path / "out.pt"
    out.write_bytes(_get(url, r.json()["links"]["artifact"]).content)
    apply(model, out)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == {
        p["name"]: p["requires_grad"] for p in report["parameters"]}
