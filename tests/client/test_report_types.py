"""The client's typed report reads every part of the report the service produces (built here in-process)."""

from __future__ import annotations

import pytest
from fixtures.models import build, save
from layerfreeze.freeze import freeze_file
from layerfreeze_client import Report, Spec
from layerfreeze_client._table import render_report


@pytest.fixture(scope="module")
def report_json(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    src = save(build("user"), tmp / "user.pt", "module")
    spec = Spec().freeze(names=["embed", "body"]).unfreeze(params=["bias"]).freeze(names=["nothing"])
    spec.strict = False
    return freeze_file(src, spec.to_dict(), tmp / "user.frozen.pt").model_dump(mode="json")


def test_every_part_is_typed(report_json: dict) -> None:
    report = Report.from_json(report_json)
    raw = report_json
    assert report.format == raw["format"] == "torch.module"
    assert report.input.sha256 == raw["input"]["sha256"] and report.output is not None
    assert report.output.bytes == raw["output"]["bytes"] and not report.dry_run
    s = report.summary
    for field in ("parameters", "trainable", "frozen", "numel_total", "numel_trainable", "numel_frozen",
                  "bytes_total", "bytes_frozen", "training_memory_saved_bytes"):
        assert getattr(s, field) == raw["summary"][field], field
    assert s.trainable_fraction == pytest.approx(raw["summary"]["trainable_fraction"])
    assert [(r.index, r.action, r.selected, r.decided) for r in report.rules] == [
        (r["index"], r["action"], r["selected"], r["decided"]) for r in raw["rules"]]
    assert [p.name for p in report.parameters] == [p["name"] for p in raw["parameters"]]
    assert report.states() == {p["name"]: p["requires_grad"] for p in raw["parameters"]}
    assert [p.was for p in report.parameters] == [p["was"] for p in raw["parameters"]]
    assert [p.rule for p in report.parameters] == [p["rule"] for p in raw["parameters"]]
    tied = [p for p in report.parameters if p.aliases]
    assert tied and tied[0].aliases == tuple(raw["parameters"][report.parameters.index(tied[0])]["aliases"])
    assert [b.name for b in report.buffers] == [b["name"] for b in raw["buffers"]]
    assert [(m.name, m.type, m.state, m.depth, m.numel) for m in report.modules] == [
        (m["path"], m["type"], m["state"], m["depth"], m["numel"]) for m in raw["modules"]]
    assert [(w.code, w.names, w.rule) for w in report.warnings] == [
        (w["code"], tuple(w["names"]), w["rule"]) for w in raw["warnings"]]
    assert any(w.rule == 2 for w in report.warnings)  # the rule that selected nothing (strict off)


def test_the_table_shows_every_module_and_the_totals(report_json: dict) -> None:
    report = Report.from_json(report_json)
    text = render_report(report)
    rows = [line.split() for line in text.splitlines()]
    for module in report.modules:
        label = module.name.rpartition(".")[2] or "(root)"
        assert any(r[:3] == [label, module.type.rpartition(".")[2], module.state or "-"] for r in rows if r)
    assert f"parameters: {report.summary.parameters}" in text
    for w in report.warnings:
        assert w.message in text
    by_param = render_report(report, parameters=True)
    assert all(p.name in by_param for p in report.parameters)


def test_unknown_fields_are_kept_and_missing_or_mistyped_ones_named(report_json: dict) -> None:
    from layerfreeze_client import ResponseFormatError

    changed = {**report_json, "new_top_level": {"x": 1},
               "summary": {**report_json["summary"], "new_total": 3},
               "parameters": [{**p, "new": True} for p in report_json["parameters"]]}
    report = Report.from_json(changed)
    assert report.states() == Report.from_json(report_json).states()
    assert report.raw["new_top_level"] == {"x": 1} and report.summary.raw["new_total"] == 3
    missing = {k: v for k, v in report_json.items() if k != "buffers"}
    with pytest.raises(ResponseFormatError, match=r"^/buffers: missing"):
        Report.from_json(missing)
    wrong = {**report_json, "parameters": [{**report_json["parameters"][0], "requires_grad": "yes"}]}
    with pytest.raises(ResponseFormatError, match=r"^/parameters/0/requires_grad: expected true or false"):
        Report.from_json(wrong)
