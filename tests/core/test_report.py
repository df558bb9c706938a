from __future__ import annotations

import torch
from fixtures.live import live_inventory
from fixtures.models import build
from layerfreeze.core.model import Inventory, ModuleInfo, TensorInfo
from layerfreeze.core.report import FileRef, Report, build_report
from layerfreeze.core.selection import select
from layerfreeze.core.spec import parse_spec

SOURCE = FileRef(filename="m.pt", bytes=1, sha256="0" * 64)


def report_for(model, spec, kind="module") -> Report:
    parsed = parse_spec(spec)
    return build_report(select(parsed, live_inventory(model, kind)), parsed, input=SOURCE, output=None)


def test_module_totals_equal_module_parameters_and_states():
    model = build("user")
    report = report_for(model, {"rules": [{"action": "freeze", "names": ["body.0", "head"]}]})
    for path in ("body.0", "head"):  # the classic way, on the live model
        model.get_submodule(path).requires_grad_(False)
    for entry in report.modules:
        module = model.get_submodule(entry.path)
        params = list(module.parameters())  # deduplicated, like the report's module totals
        assert entry.numel == sum(p.numel() for p in params), entry.path
        assert entry.numel_trainable == sum(p.numel() for p in params if p.requires_grad), entry.path
        expected = (None if not params else "trainable" if all(p.requires_grad for p in params)
                    else "frozen" if not any(p.requires_grad for p in params) else "partial")
        assert entry.state == expected, entry.path
    by_path = {m.path: m for m in report.modules}
    assert by_path["head"].state == "frozen" and by_path["embed"].state == "frozen"  # one tied tensor
    assert by_path["body.1"].state is None and by_path["body.1"].type.endswith("GELU")


def test_bytes_follow_dtypes_and_buffers_are_separate():
    model = build("cnn").to(torch.bfloat16)
    report = report_for(model, {"rules": [{"action": "freeze", "types": ["Conv2d"]}]})
    s = report.summary
    frozen = [p for m in model.modules() if isinstance(m, torch.nn.Conv2d) for p in m.parameters()]
    assert s.bytes_frozen == sum(p.numel() * 2 for p in frozen)
    assert s.bytes_total == sum(p.numel() * 2 for p in model.parameters())
    assert s.buffers == len(list(model.buffers()))
    assert s.bytes_buffers == sum(b.numel() * b.element_size() for b in model.buffers())
    assert s.changed == len(frozen) and s.frozen == len(frozen)
    assert abs(s.trainable_fraction - s.numel_trainable / s.numel_total) < 1e-12
    assert "AdamW" in s.training_memory_assumption


def test_rule_entries_and_reader_notes():
    inv = live_inventory(build("seq3"), "state_dict")
    inv = Inventory(format="torch.checkpoint", tensors=inv.tensors, modules=inv.modules, types_known=False,
                    children_exact=True, prefix="state_dict", notes=("state dict found under 'state_dict'",))
    spec = parse_spec({"rules": [{"action": "freeze", "names": ["**"]},
                                 {"action": "unfreeze", "names": ["2"]}]})
    report = build_report(select(spec, inv), spec, input=SOURCE, output=None)
    assert [(r.selected, r.decided, r.selectors) for r in report.rules] == [
        (4, 2, ["names"]), (2, 2, ["names"])]
    assert report.prefix == "state_dict" and report.format == "torch.checkpoint"
    assert [w.code for w in report.warnings] == ["reader_note"]
    assert [p.rule for p in report.parameters] == [0, 0, 1, 1]
    assert [p.was for p in report.parameters] == [True] * 4


def test_shared_storage_is_reported():
    inv = Inventory(format="torch.module", types_known=False, children_exact=True,
                    modules=(ModuleInfo("", None, ("a",)), ModuleInfo("a", None)), tensors=(
                        TensorInfo("a.w1", "parameter", (2,), "float32", True, storage="0"),
                        TensorInfo("a.w2", "parameter", (2,), "float32", True, storage="0")))
    spec = parse_spec({})
    report = build_report(select(spec, inv), spec, input=SOURCE, output=None)
    [warning] = report.warnings
    assert warning.code == "shared_storage" and warning.names == ["a.w1", "a.w2"]


def test_schema_has_the_contract_fields():
    schema = Report.model_json_schema()
    assert {"format", "input", "output", "summary", "rules", "parameters", "buffers", "modules", "warnings",
            "spec_sha256"} <= set(schema["properties"])
    defs = schema["$defs"]
    assert {"name", "module", "module_type", "shape", "dtype", "numel", "requires_grad", "was", "rule",
            "aliases"} <= set(defs["ParameterReport"]["properties"])
    assert {"parameters", "trainable", "frozen", "numel_total", "numel_trainable", "numel_frozen",
            "trainable_fraction", "bytes_total", "bytes_trainable", "bytes_frozen",
            "training_memory_saved_bytes", "training_memory_assumption"} <= set(defs["Summary"]["properties"])
    dumped = report_for(build("seq3"), {}).model_dump(mode="json")
    assert Report.model_validate(dumped).model_dump(mode="json") == dumped
