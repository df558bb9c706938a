"""The client's models read exactly what the service sends: their declared shapes equal the service's own
schema (its OpenAPI document for jobs, its pydantic report models), key for key and type for type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from layerfreeze.api.app import create_app
from layerfreeze.core import report as service_report
from layerfreeze.settings import Settings
from layerfreeze_client import (
    BufferInfo,
    FileInfo,
    Job,
    JobLinks,
    JobPage,
    ModelFile,
    ModelFiles,
    ModuleState,
    ParameterState,
    Report,
    ReportWarning,
    ResponseFormatError,
    RuleStats,
    Summary,
)

# client model -> the service's schema name (its OpenAPI component, or its pydantic class)
JOB_SCHEMAS = {Job: "JobPublic", JobLinks: "JobLinks", FileInfo: "FileInfo", JobPage: "JobsPublic"}
REPORT_SCHEMAS = {Report: "Report", Summary: "Summary", RuleStats: "RuleReport",
                  ParameterState: "ParameterReport", BufferInfo: "BufferReport", ModuleState: "ModuleReport",
                  ReportWarning: "WarningReport", FileInfo: "FileRef", ModelFiles: "FilesReport",
                  ModelFile: "ModelFile"}
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))  # not started: no lifespan
    return app.openapi()["components"]["schemas"]


@pytest.fixture(scope="module")
def report_schemas() -> dict[str, Any]:
    schema = service_report.Report.model_json_schema()
    return {"Report": schema, **schema["$defs"]}


def client_types(spec: Any, names: dict[type, str]) -> set[str]:
    """JSON types (and model names) a SHAPE entry accepts."""
    if isinstance(spec, tuple):
        return client_types(spec[0], names) | {"null"}
    if isinstance(spec, list):
        return {"array of " + "|".join(sorted(client_types(spec[0], names)))}
    if hasattr(spec, "SHAPE"):
        return {names[spec]}
    return {JSON_TYPES[spec]}


def schema_types(prop: dict[str, Any]) -> set[str]:
    """JSON types (and model names) a JSON-schema property allows."""
    if "$ref" in prop:
        return {prop["$ref"].rsplit("/", 1)[1]}
    if "anyOf" in prop:
        return set().union(*(schema_types(p) for p in prop["anyOf"]))
    if prop.get("type") == "array":
        return {"array of " + "|".join(sorted(schema_types(prop["items"])))}
    if "type" in prop:
        return {prop["type"]}
    if "enum" in prop or "const" in prop:  # a Literal of strings
        return {"string"}
    if prop.get("additionalProperties") is not None or prop == {}:
        return {"object"}
    raise AssertionError(f"unexpected schema {prop}")


def check(client: Any, schema: dict[str, Any], names: dict[type, str]) -> None:
    props = schema["properties"]
    assert set(client.SHAPE) == set(props), client.__name__
    assert set(client.SHAPE) - set(client.OPTIONAL) == set(schema.get("required", ())), client.__name__
    for key, spec in client.SHAPE.items():
        assert client_types(spec, names) == schema_types(props[key]), (client.__name__, key)


@pytest.mark.parametrize("client", list(JOB_SCHEMAS), ids=lambda c: c.__name__)
def test_job_models_match_the_openapi_document(openapi: dict[str, Any], client: Any) -> None:
    check(client, openapi[JOB_SCHEMAS[client]], JOB_SCHEMAS)


@pytest.mark.parametrize("client", list(REPORT_SCHEMAS), ids=lambda c: c.__name__)
def test_report_models_match_the_service_report_schema(report_schemas: dict[str, Any], client: Any) -> None:
    check(client, report_schemas[REPORT_SCHEMAS[client]], REPORT_SCHEMAS)


def test_optional_defaults_are_the_service_defaults() -> None:
    from layerfreeze.api import schemas as service_schemas

    for client, name, module in [*((c, n, service_schemas) for c, n in JOB_SCHEMAS.items()),
                                 *((c, n, service_report) for c, n in REPORT_SCHEMAS.items())]:
        fields = getattr(module, name).model_fields
        for key, default in client.OPTIONAL.items():
            service_default = fields[key].get_default(call_default_factory=True)
            if isinstance(service_default, str):
                continue  # descriptive text (the generator's version, the memory assumption): always sent
            assert (list(default) if isinstance(default, tuple) else default) == service_default, (name, key)


def test_a_real_report_and_job_read_whole(tmp_path: Path) -> None:
    from fixtures.models import build, save
    from layerfreeze.api.schemas import job_public
    from layerfreeze.freeze import freeze_file
    from layerfreeze.storage.jobs import JobRecord

    src = save(build("nested"), tmp_path / "n.pt", "module")
    raw = freeze_file(src, {"rules": [{"action": "freeze", "names": ["encoder", "nope"]}]},
                      tmp_path / "o.pt").model_dump(mode="json")
    report = Report.from_json(raw)
    assert [m.name for m in report.modules] == [m["path"] for m in raw["modules"]]
    [warning] = [w for w in report.warnings if w.code == "unmatched_value"]
    assert warning.pointer == "/rules/0/names/1" and warning.suggestions
    for status in ("queued", "running", "succeeded", "failed"):
        record = JobRecord(id="j1", tenant="", status=status, created_at=1.0, dry_run=False, spec="{}",
                           input_filename="n.pt", input_bytes=3, input_sha256="a" * 64,
                           output_filename="n.frozen.pt", output_bytes=5 if status == "succeeded" else None,
                           output_sha256="b" * 64 if status == "succeeded" else None)
        job = Job.from_json(job_public(record).model_dump(mode="json"))
        assert job.status == status and (job.output is not None) == (status == "succeeded")
        assert (job.links.report is not None) == (job.links.artifact is not None) == (status == "succeeded")


@pytest.mark.parametrize("shape", [
    {"modules": {"path": "", "children": []}},                   # a nested tree: never sent
    {"rules": [{"index": 0, "selected": {"parameters": 1}}]},    # counts as objects: never sent
    {"summary": {"parameters": "2"}},                            # numbers as strings
    {"parameters": [{"name": "a", "requires_grad": 1}]},         # 1 is not true
])
def test_shapes_the_service_never_sends_are_refused(shape: dict[str, Any], tmp_path: Path) -> None:
    from fixtures.models import build, save
    from layerfreeze.freeze import freeze_file

    raw = freeze_file(save(build("seq3"), tmp_path / "m.pt", "state_dict"), "{}").model_dump(mode="json")
    with pytest.raises(ResponseFormatError) as info:
        Report.from_json({**raw, **shape})
    assert str(info.value).startswith("/" + next(iter(shape)))
