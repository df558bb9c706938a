"""An in-memory stand-in for the layerfreeze HTTP API, for client tests that need exact control of the
answers (faults, corrupt downloads, paging). It speaks the documented interface: multipart upload, job JSON,
problem+json errors, ETag / Repr-Digest / Range on the artifact. Served through ``httpx.MockTransport`` or
a real ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

Fault = Callable[[httpx.Request], "httpx.Response | None"]


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field: (filename, bytes)}`` from a multipart/form-data body (the stdlib email parser)."""
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return out


def problem(status: int, title: str, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


@dataclass
class FakeJob:
    id: str
    filename: str
    upload: bytes
    spec: dict[str, Any]
    dry_run: bool
    artifact: bytes
    polls_until_done: int = 0
    status: str = "queued"
    error: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        """The job as the service's JobPublic has it (links only where they answer)."""
        base = f"/v1/jobs/{self.id}"
        done = self.status == "succeeded"
        return {
            "id": self.id, "status": self.status, "created_at": "2026-01-01T00:00:00Z",
            "started_at": None,
            "finished_at": None if self.status in ("queued", "running") else "2026-01-01T00:00:01Z",
            "input": {"filename": self.filename, "bytes": len(self.upload),
                      "sha256": hashlib.sha256(self.upload).hexdigest()},
            "output": self._output() if done else None,
            "dry_run": self.dry_run, "error": self.error, "extra_field": {"ignored": True},
            "links": {"self": base, "report": f"{base}/report" if done else None,
                      "artifact": f"{base}/artifact" if done and not self.dry_run else None},
        }

    def _output(self) -> dict[str, Any] | None:
        if self.dry_run:
            return None
        return {"filename": self.filename.replace(".pt", ".frozen.pt"), "bytes": len(self.artifact),
                "sha256": hashlib.sha256(self.artifact).hexdigest()}

    def report(self) -> dict[str, Any]:
        """A report in the service's shape (core.report.Report), for a two-parameter Linear."""
        names = [r for rule in self.spec.get("rules", []) for r in rule.get("names", [])]
        params = [
            {"name": "0.weight", "module": "0", "module_type": "torch.nn.modules.linear.Linear",
             "shape": [2, 2], "dtype": "float32", "numel": 4, "requires_grad": "0" not in names, "was": True,
             "rule": 0 if "0" in names else None, "aliases": []},
            {"name": "0.bias", "module": "0", "module_type": "torch.nn.modules.linear.Linear", "shape": [2],
             "dtype": "float32", "numel": 2, "requires_grad": True, "was": True, "rule": None, "aliases": []},
        ]
        frozen = [p for p in params if not p["requires_grad"]]
        numel_frozen = sum(p["numel"] for p in frozen)
        state = "partial" if frozen else "trainable"

        def module(path: str, type_: str) -> dict[str, Any]:
            return {"path": path, "type": type_, "depth": path.count(".") + 1 if path else 0,
                    "parameters": 2, "trainable": 2 - len(frozen), "frozen": len(frozen), "numel": 6,
                    "numel_trainable": 6 - numel_frozen, "numel_frozen": numel_frozen, "state": state}

        return {
            "report_version": 1, "generator": "fake", "format": "torch.state_dict",
            "input": self.json()["input"], "output": self._output(), "dry_run": self.dry_run,
            "spec": self.spec, "spec_sha256": "0" * 64, "types_known": True, "children_exact": True,
            "prefix": None,
            "summary": {"parameters": 2, "trainable": 2 - len(frozen), "frozen": len(frozen),
                        "numel_total": 6, "numel_trainable": 6 - numel_frozen, "numel_frozen": numel_frozen,
                        "trainable_fraction": (6 - numel_frozen) / 6, "bytes_total": 24,
                        "bytes_trainable": 24 - 4 * numel_frozen, "bytes_frozen": 4 * numel_frozen,
                        "buffers": 0, "bytes_buffers": 0, "changed": len(frozen),
                        "training_memory_saved_bytes": 12 * numel_frozen,
                        "training_memory_assumption": "frozen bytes x 3"},
            "rules": [{"index": i, "action": r.get("action"), "selectors": ["names"], "selected": 1,
                       "selected_numel": 4, "decided": 1, "decided_numel": 4, "children_counted": None}
                      for i, r in enumerate(self.spec.get("rules", []))],
            "parameters": params, "buffers": [],
            "modules": [module("", "torch.nn.modules.container.Sequential"),
                        module("0", "torch.nn.modules.linear.Linear")],
            "warnings": [{"code": "example", "message": "a warning from the fake", "names": [], "rule": None,
                          "pointer": None, "suggestions": []}],
            "some_future_field": [1, 2, 3],
        }


@dataclass
class FakeService:
    """State plus knobs: ``faults`` answer first (return None to pass), ``polls`` delays completion."""

    polls: int = 0
    corrupt_artifact: bool = False
    fail_with: dict[str, Any] | None = None
    faults: list[Fault] = field(default_factory=list)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    token: str | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for fault in list(self.faults):
            answer = fault(request)
            if answer is not None:
                return answer
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            resp = problem(401, "Unauthorized", "a bearer token is required")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        parts = request.url.path.strip("/").split("/")
        if parts == ["v1", "jobs"] and request.method == "POST":
            return self._create(request)
        if parts == ["v1", "jobs"] and request.method == "GET":
            return self._list(request)
        if len(parts) >= 3 and parts[:2] == ["v1", "jobs"]:
            job = self.jobs.get(parts[2])
            if job is None:
                return problem(404, "Not Found", f"no job {parts[2]}")
            tail = parts[3] if len(parts) > 3 else ""
            if request.method == "DELETE" and not tail:
                del self.jobs[job.id]
                return httpx.Response(204)
            self._advance(job)
            if not tail:
                return httpx.Response(200, json=job.json())
            if job.status != "succeeded":
                return problem(409, "Conflict", f"job {job.id} is {job.status}")
            if tail == "report":
                return httpx.Response(200, json=job.report())
            if tail == "artifact" and not job.dry_run:
                return self._artifact(request, job)
        if parts == ["healthz"]:
            return httpx.Response(200, json={"status": "ok"})
        return problem(404, "Not Found", request.url.path)

    def _advance(self, job: FakeJob) -> None:
        if job.status in ("queued", "running"):
            if job.polls_until_done > 0:
                job.polls_until_done -= 1
                job.status = "running"
            elif self.fail_with is not None:
                job.status, job.error = "failed", dict(self.fail_with)
            else:
                job.status = "succeeded"

    def _create(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        assert request.headers.get("content-length") == str(len(body)), "Content-Length must be exact"
        fields = parse_multipart(request.headers["content-type"], body)
        filename, upload = fields["model"]
        spec = json.loads(fields.get("spec", (None, b"{}"))[1] or b"{}")
        if not isinstance(spec, dict) or "bogus" in spec:
            return problem(422, "Invalid spec", "the spec has errors",
                           errors=[{"pointer": "/bogus", "message": "unknown key", "suggestions": ["rules"]}])
        dry_run = fields.get("dry_run", (None, b"false"))[1] == b"true"
        job = FakeJob(id=f"job{next(self._ids)}", filename=filename or "upload", upload=upload, spec=spec,
                      dry_run=dry_run, artifact=b"FROZEN" + upload, polls_until_done=self.polls)
        self.jobs[job.id] = job
        if request.url.params.get("wait") and job.polls_until_done == 0:
            self._advance(job)
            if job.status == "failed":
                err = job.error or {}
                return httpx.Response(int(err.get("status", 422)), json={**err, "job": job.json()},
                                      headers={"Content-Type": "application/problem+json"})
            return httpx.Response(200, json=job.json())
        return httpx.Response(202, json=job.json(), headers={"Location": f"/v1/jobs/{job.id}"})

    def _list(self, request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params.get("limit", "50"))
        ordered = sorted(self.jobs.values(), key=lambda j: int(j.id[3:]), reverse=True)
        start = int(request.url.params.get("cursor", "0"))
        page = ordered[start:start + limit]
        more = start + limit < len(ordered)
        nxt = f"/v1/jobs?limit={limit}&cursor={start + limit}" if more else None
        return httpx.Response(200, json={"items": [j.json() for j in page], "next": nxt})

    def _artifact(self, request: httpx.Request, job: FakeJob) -> httpx.Response:
        data = job.artifact
        digest = hashlib.sha256(data).digest()
        sent = b"X" + data[1:] if self.corrupt_artifact else data
        name = job.filename.replace(".pt", ".frozen.pt")
        headers = {"ETag": f'"{digest.hex()}"',
                   "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
                   "Content-Disposition": f'attachment; filename="{name}"', "Accept-Ranges": "bytes"}
        rng = request.headers.get("range")
        same = request.headers.get("if-range", headers["ETag"]) == headers["ETag"]
        if rng and rng.startswith("bytes=") and same:
            start = int(rng[6:].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return httpx.Response(206, content=sent[start:], headers=headers)
        return httpx.Response(200, content=sent, headers=headers)


class StubHTTPServer:
    """Serves a handler (httpx.Request -> httpx.Response) on 127.0.0.1 from a thread: a real socket."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = httpx.Request(self.command, f"http://{self.headers.get('Host')}{self.path}",
                                        headers=list(self.headers.items()), content=body)
                response = outer.handler(request)
                payload = response.read()
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
