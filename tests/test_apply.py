"""apply(): one call puts the freeze state on a live model, from any output format, a report or a mapping."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from fixtures.models import FORMATS, build, save
from fixtures.training import example
from layerfreeze.freeze import freeze_file
from layerfreeze_client._apply import AppliedState, CheckpointReadError, ModelMismatchError, apply

from testing.oracle import requires_grad as flags

SPEC = {"rules": [{"action": "freeze", "names": ["embed", "body.0"]}]}


@pytest.fixture
def frozen(tmp_path):
    def make(fmt: str):
        src = save(build("user"), tmp_path / f"in.{fmt}", fmt, example("user"))
        out = tmp_path / f"out.{fmt}"
        return out, freeze_file(src, SPEC, out)
    return make


EXPECTED = {"scale": True, "embed.weight": False, "head.weight": False, "body.0.weight": False,
            "body.0.bias": False, "body.2.weight": True, "body.2.bias": True}


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "module"])
def test_apply_from_every_output_checkpoint(frozen, fmt):
    out, _ = frozen(fmt)
    model = build("user", seed=3)
    state = apply(model, out)
    assert flags(model) == EXPECTED
    assert isinstance(state, AppliedState)
    assert set(state.frozen) == {n for n, v in EXPECTED.items() if not v}
    assert set(state.trainable) == {n for n, v in EXPECTED.items() if v}


def test_apply_from_a_pickled_module_needs_the_same_allowlist_as_torch_load(frozen):
    out, _ = frozen("module")
    model = build("user", seed=3)
    with pytest.raises(CheckpointReadError, match="safe_globals"):
        apply(model, out)
    assert all(flags(model).values())  # nothing changed on failure
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(out))
    import fixtures.models

    allowed = [fixtures.models.UserNet] + [
        getattr(torch.nn, n.rsplit(".", 1)[1]) for n in names if n.startswith("torch.nn.")]
    with torch.serialization.safe_globals(allowed):
        apply(model, out)
    assert flags(model) == EXPECTED


def test_apply_from_reports_in_every_shape(frozen, tmp_path):
    _, report = frozen("state_dict")
    path = tmp_path / "report.json"
    path.write_text(report.model_dump_json())
    for source in (report, report.model_dump(mode="json"), path, str(path)):
        model = build("user", seed=3)
        apply(model, source)
        assert flags(model) == EXPECTED


def test_apply_from_a_mapping_and_prefixes():
    model = build("seq3")
    apply(model, {"0.weight": False, "0.bias": False, "2.weight": True, "2.bias": True})
    assert flags(model) == {"0.weight": False, "0.bias": False, "2.weight": True, "2.bias": True}
    lightning = {"model.0.weight": True, "model.0.bias": True, "model.2.weight": False, "model.2.bias": True}
    apply(model, lightning)  # a wrapper's single leading segment is recognised
    assert flags(model)["2.weight"] is False and flags(model)["0.weight"] is True
    apply(model, {"net.model.0.weight": False, "net.model.0.bias": False, "net.model.2.weight": False,
                  "net.model.2.bias": False}, prefix="net.model.")
    assert not any(flags(model).values())


def test_mismatch_lists_missing_and_unexpected_names():
    model = build("seq3")
    with pytest.raises(ModelMismatchError) as info:
        apply(model, {"0.weight": False, "0.bias": False, "2.weight": False, "3.bias": False})
    assert isinstance(info.value, ValueError)
    assert info.value.missing == ("2.bias",)
    assert info.value.unexpected == ("3.bias",)
    assert "2.bias" in str(info.value) and "3.bias" in str(info.value)
    assert all(flags(model).values())  # nothing applied on a mismatch
    state = apply(model, {"0.weight": False, "3.bias": False}, strict=False)
    assert state.missing == ("0.bias", "2.weight", "2.bias") and state.unexpected == ("3.bias",)
    assert flags(model)["0.weight"] is False


def test_buffers_in_a_state_dict_are_not_unexpected(frozen):
    out, _ = frozen("state_dict")
    model = build("user", seed=3)
    apply(model, out)  # the file also holds body.2.running_mean etc.: buffers, fine
    assert flags(model) == EXPECTED


def test_unusable_sources(tmp_path):
    plain = save(build("seq3"), tmp_path / "plain.safetensors", "safetensors")
    with pytest.raises(CheckpointReadError, match="no layerfreeze"):
        apply(build("seq3"), plain)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(CheckpointReadError):
        apply(build("seq3"), junk)
    with pytest.raises(CheckpointReadError):
        apply(build("seq3"), {"0.weight": "no"})
    assert issubclass(CheckpointReadError, ValueError)


def test_importing_apply_does_not_import_torch(subprocess_env):
    code = ("import sys, layerfreeze_client._apply as a; assert callable(a.apply); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_report_json_round_trip_is_what_apply_reads(frozen):
    _, report = frozen("safetensors")
    data = json.loads(report.model_dump_json())
    assert {p["name"]: p["requires_grad"] for p in data["parameters"]} == {
        p.name: p.requires_grad for p in report.parameters}


def test_applying_an_original_state_dict_warns(tmp_path):
    original = save(build("seq3"), tmp_path / "original.pt", "state_dict")
    model = build("seq3")
    with pytest.warns(UserWarning, match="not the original"):
        apply(model, original)
    assert not any(flags(model).values())  # it did what the file says, but said why that may be wrong
