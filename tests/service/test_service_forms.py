"""POST /v1/jobs refuses form mistakes instead of silently running an inspection; job links that answer."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from svc_helpers import checkpoint, report_flags, wait_for

pytestmark = pytest.mark.server

FREEZE_0 = json.dumps({"rules": [{"action": "freeze", "names": ["0"]}]})


def post(c: httpx.Client, src: Path, data: dict[str, str], params: dict[str, str] | None = None,
         ) -> httpx.Response:
    with src.open("rb") as f:
        return c.post("/v1/jobs", files={"model": (src.name, f)}, data=data, params=params or {})


def jobs_now(c: httpx.Client) -> set[str]:
    return {j["id"] for j in c.get("/v1/jobs", params={"limit": 200}).json()["items"]}


def test_unknown_form_fields_are_a_422_that_names_them(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path)
    with server.client() as c:
        before = jobs_now(c)
        r = post(c, src, {"specs": FREEZE_0})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["fields"] == ["specs"] and "'specs'" in problem["detail"]
        assert "did you mean 'spec'" in problem["detail"]
        r = post(c, src, {"spec": FREEZE_0, "dryrun": "true", "strict": "false"})
        assert r.status_code == 422 and r.json()["fields"] == ["dryrun", "strict"]
        with src.open("rb") as f:  # the file under another name: no 'model', and the name it came under
            r = c.post("/v1/jobs", files={"file": (src.name, f)}, data={"spec": FREEZE_0})
        assert r.status_code == 422 and "'file'" in r.json()["detail"] and "'model'" in r.json()["detail"]
        assert jobs_now(c) == before  # nothing was queued


def test_a_missing_spec_is_a_422_unless_the_request_is_an_inspection(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path)
    with server.client() as c:
        for data in ({}, {"spec": ""}, {"spec": "  ", "dry_run": "false"}):
            r = post(c, src, data)
            assert r.status_code == 422, (data, r.text)
            assert r.json()["fields"] == ["spec"] and "spec={}" in r.json()["detail"]
        for data, params in (({"spec": "{}"}, {}), ({"dry_run": "true"}, {}), ({}, {"dry_run": "true"})):
            r = post(c, src, data, params)
            assert r.status_code == 202, (data, params, r.text)
            job = wait_for(c, r.json()["id"])
            report = c.get(job["links"]["report"]).json()
            assert report["summary"]["changed"] == 0 and report["spec"] == {"rules": [], "strict": True}


def test_dry_run_as_a_query_parameter_is_taken_and_a_contradiction_refused(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path)
    with server.client() as c:
        r = post(c, src, {"spec": FREEZE_0}, {"dry_run": "true"})
        assert r.status_code == 202, r.text
        job = wait_for(c, r.json()["id"])
        assert job["dry_run"] is True and job["links"]["artifact"] is None
        assert report_flags(c.get(job["links"]["report"]).json())["0.weight"] is False
        assert c.get(f"/v1/jobs/{job['id']}/artifact").status_code == 404
        r = post(c, src, {"spec": FREEZE_0, "dry_run": "false"}, {"dry_run": "true"})
        assert r.status_code == 422 and r.json()["fields"] == ["dry_run"] and "disagree" in r.json()["detail"]
        r = post(c, src, {"spec": FREEZE_0, "dry_run": "true"}, {"dry_run": "yes"})  # agreeing: fine
        assert r.status_code == 202
        r = post(c, src, {"spec": FREEZE_0}, {"dry_run": ""})
        assert r.status_code == 400 and "'dry_run'" in r.json()["detail"]
        r = post(c, src, {"spec": FREEZE_0}, {"dryrun": "true"})
        assert r.status_code == 422 and r.json()["fields"] == ["dryrun"]
        assert "query parameter" in r.json()["detail"]


def test_the_form_is_described_in_the_openapi_document(server) -> None:
    with server.client() as c:
        op = c.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]
    assert "spec={}" in op["description"] and "?dry_run=true" in op["description"]
    assert {p["name"] for p in op["parameters"]} == {"wait", "dry_run"}
    form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"model", "spec", "dry_run"} and form["additionalProperties"] is False


def test_links_only_where_they_answer(server, tmp_path: Path) -> None:
    with server.client() as c:
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
        r = post(c, bad, {"spec": "{}"}, {"wait": "30"})
        job = r.json().get("job") or r.json()
        job = wait_for(c, job["id"])
        assert job["status"] == "failed"
        assert job["links"] == {"self": f"/v1/jobs/{job['id']}", "report": None, "artifact": None,
                                "patch": None, "model": None}
        assert c.get(job["links"]["self"]).status_code == 200
        assert c.get(f"/v1/jobs/{job['id']}/report").status_code == 409  # what a link would have led to

        good = post(c, checkpoint(tmp_path), {"spec": FREEZE_0}, {"wait": "30"}).json()
        job = wait_for(c, good["id"])
        links = job["links"]
        assert job["status"] == "succeeded" and None not in links.values()
        assert all(c.get(url).status_code == 200 for url in links.values())
