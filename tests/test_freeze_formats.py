"""freeze_file end to end: every zoo model in every format selects what the classic loops select,
writes a same-format file whose tensors are unchanged, and reports consistently."""

from __future__ import annotations

import json

import pytest
import torch
from core import classic
from fixtures.models import FORMATS, save
from fixtures.training import ALL_MODELS, example, make
from layerfreeze.errors import SpecError
from layerfreeze.freeze import freeze_file, sha256_file

RECORDS_TYPES = {"module", "torchscript"}
CHILDREN_EXACT = {"module", "torchscript", "state_dict", "checkpoint", "legacy"}


def final_states(report) -> dict[str, bool]:
    out = {}
    for p in report.parameters:
        for name in (p.name, *p.aliases):
            out[name] = p.requires_grad
    return out


def saved(tmp_path, name, fmt):
    model = make(name)
    if model is None:
        pytest.skip("transformers not installed")
    return model, save(model, tmp_path / f"{name}.{fmt}", fmt, example(name))


def comparable(ours: dict[str, bool], expected: dict[str, bool]) -> dict[str, bool]:
    """The expected states of the names the file has (safetensors drops one name of tied weights)."""
    assert set(ours) <= set(expected)
    return {n: expected[n] for n in ours}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_three_classic_styles(tmp_path, name, fmt):
    model, src = saved(tmp_path, name, fmt)
    modules = [p for p, m in model.named_modules() if p and any(True for _ in m.parameters())]
    in_file = set(final_states(freeze_file(src, {})))  # safetensors keeps one name of tied weights
    picked = [m for m in modules[1::4] if any(n.startswith(m + ".") for n in in_file)]
    report = freeze_file(src, {"rules": [{"action": "freeze", "names": picked}]})
    ours = final_states(report)
    assert ours == comparable(ours, classic.freeze_modules(model.requires_grad_(True), picked))

    if fmt in RECORDS_TYPES:
        report = freeze_file(src, {"rules": [{"action": "freeze", "types": ["Linear"]}], "strict": False})
        ours = final_states(report)
        assert ours == comparable(ours, classic.freeze_types(model.requires_grad_(True), torch.nn.Linear))
    else:
        with pytest.raises(SpecError):
            freeze_file(src, {"rules": [{"action": "freeze", "types": ["Linear"]}]})

    if fmt in CHILDREN_EXACT:
        rules = [{"action": "freeze", "children": {"of": "", "stop": 2}}]
        expected = classic.freeze_children(model.requires_grad_(True), "", slice(0, 2))
        if not all(expected.values()):
            ours = final_states(freeze_file(src, {"rules": rules}))
            assert ours == comparable(ours, expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_written_file_keeps_every_tensor_and_reports_hashes(tmp_path, fmt):
    _, src = saved(tmp_path, "user", fmt)
    dst = tmp_path / f"out.{fmt}"
    report = freeze_file(src, {"rules": [{"action": "freeze", "names": ["body"]}]}, dst,
                         input_name="upload.bin", output_name="upload.frozen.bin")
    assert report.input.filename == "upload.bin" and report.output is not None
    assert report.output.filename == "upload.frozen.bin"
    assert (report.input.bytes, report.input.sha256) == sha256_file(src)
    assert (report.output.bytes, report.output.sha256) == sha256_file(dst)
    assert report.format == freeze_file(dst, {}).format  # same format as the upload
    again = freeze_file(dst, {})
    assert final_states(again) == final_states(report) or fmt == "safetensors"
    assert report.spec_sha256 == freeze_file(src, '{"strict": true, "rules": [{"names": ["body"], '
                                                  '"action": "freeze"}]}').spec_sha256
    if fmt in ("state_dict", "legacy"):
        before = torch.load(src, weights_only=True)
        after = torch.load(dst, weights_only=True)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_safetensors_output_carries_the_state_in_its_metadata(tmp_path):
    from safetensors import safe_open

    _, src = saved(tmp_path, "nested", "safetensors")
    dst = tmp_path / "out.safetensors"
    report = freeze_file(src, {"rules": [{"action": "freeze", "names": ["encoder"]}]}, dst)
    with safe_open(str(dst), "pt") as f:
        meta = json.loads(f.metadata()["layerfreeze"])
    assert meta["format_version"] == 1 and meta["spec_sha256"] == report.spec_sha256
    assert set(meta["frozen"]) == {p.name for p in report.parameters if not p.requires_grad}
    assert set(meta["trainable"]) == {p.name for p in report.parameters if p.requires_grad}


def test_dry_run_writes_nothing_and_failure_keeps_existing_output(tmp_path):
    _, src = saved(tmp_path, "seq3", "state_dict")
    before = set(tmp_path.iterdir())
    report = freeze_file(src, {"rules": [{"action": "freeze", "names": ["0"]}]})
    assert report.output is None and report.dry_run
    assert set(tmp_path.iterdir()) == before
    dst = tmp_path / "existing.pt"
    dst.write_bytes(b"keep me")
    with pytest.raises(SpecError):
        freeze_file(src, {"rules": [{"action": "freeze", "names": ["nope"]}]}, dst)
    assert dst.read_bytes() == b"keep me"
    assert set(tmp_path.iterdir()) == before | {dst}  # no temporary file left behind


def test_report_summary_matches_torch(tmp_path):
    model, src = saved(tmp_path, "cnn", "module")
    report = freeze_file(src, {"rules": [{"action": "freeze", "until": "3"}]})
    classic.freeze_until(model.requires_grad_(True), "3")
    s = report.summary
    assert s.parameters == len(list(model.parameters()))
    assert s.numel_total == sum(p.numel() for p in model.parameters())
    assert s.numel_frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert s.bytes_frozen == sum(p.numel() * p.element_size() for p in frozen)
    assert s.training_memory_saved_bytes == 3 * s.bytes_frozen
    assert s.buffers == len(list(model.buffers()))
    states = {m.path: m.state for m in report.modules}
    assert states["0"] == "frozen" and states["3"] == "frozen" and states["8"] == "trainable"
    assert states[""] == "partial" and states["2"] is None
    assert [w.code for w in report.warnings if w.code == "batchnorm_in_frozen_region"] == [
        "batchnorm_in_frozen_region"]
    by_path = {m.path: m for m in report.modules}
    assert by_path[""].numel == s.numel_total
    dumped = report.model_dump(mode="json")
    for key in ("format", "input", "output", "summary", "rules", "parameters", "buffers", "modules",
                "warnings", "spec_sha256"):
        assert key in dumped


def test_safetensors_order_comes_from_indices_never_from_sorting(tmp_path):
    """safetensors stores tensors sorted by name (``10`` before ``2``): positions must come from the
    index names of a Sequential, and named children of unknown order are refused, not guessed."""
    _, src = saved(tmp_path, "seq12", "safetensors")
    frozen_of = lambda spec: sorted(  # noqa: E731
        {p.module for p in freeze_file(src, spec).parameters if not p.requires_grad}, key=int)
    assert frozen_of({"rules": [{"action": "freeze", "children": {"of": "", "stop": 3}}]}) == ["0", "1", "2"]
    assert frozen_of({"rules": [{"action": "freeze", "until": "2"}]}) == ["0", "1", "2"]
    assert frozen_of({"rules": [{"action": "freeze", "children": {"of": "", "start": -2}}]}) == ["10", "11"]
    _, src = saved(tmp_path, "lstm", "safetensors")
    with pytest.raises(SpecError) as info:
        freeze_file(src, {"rules": [{"action": "freeze", "until": "lstm"}]})
    assert "definition order" in info.value.issues[0].message
    report = freeze_file(src, {"strict": False, "rules": [{"action": "freeze", "until": "lstm"}]})
    assert report.summary.frozen == 0 and any(w.code == "rule_problem" for w in report.warnings)


def test_safetensors_report_lists_numbered_modules_in_index_order(tmp_path):
    _, src = saved(tmp_path, "seq12", "safetensors")
    report = freeze_file(src, {})
    assert [m.path for m in report.modules] == ["", *(str(i) for i in range(12))]
    assert [p.name for p in report.parameters][:4] == ["0.bias", "0.weight", "1.bias", "1.weight"]
