"""``Idempotency-Key`` on POST /v1/jobs and POST /v1/models: a retry replays the first answer and never
creates a second job or model; another payload under the key is 422; a key still in flight is 409."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fixtures.models import build, save

from models.conftest import client


def _jobs(c) -> list[str]:
    return [j["id"] for j in c.get("/v1/jobs", params={"limit": 200}).json()["items"]]


def test_retried_posts_make_one_job_and_one_model(service, tmp_path: Path) -> None:
    url, _ = service
    src = save(build("seq3", seed=11), tmp_path / "m.pt", "state_dict")
    with client(url) as c:
        before = _jobs(c)
        answers = []
        for _ in range(3):  # a multipart job, retried: the same file, spec and key
            with open(src, "rb") as f:
                answers.append(c.post("/v1/jobs", data={"spec": "{}"}, files={"model": (src.name, f)},
                                      headers={"idempotency-key": "upload-1"}))
        assert [a.status_code for a in answers] == [202] * 3
        assert len({a.json()["id"] for a in answers}) == 1
        assert answers[1].headers.get("idempotent-replayed") == "true"
        assert len(_jobs(c)) == len(before) + 1

        with open(src, "rb") as f:
            model = c.post("/v1/models", files={"file": (src.name, f)}, headers={"idempotency-key": "m-1"})
        with open(src, "rb") as f:
            again = c.post("/v1/models", files={"file": (src.name, f)}, headers={"idempotency-key": "m-1"})
        assert again.status_code == model.status_code and again.json()["id"] == model.json()["id"]

        body = {"model": model.json()["id"], "spec": {"rules": [{"action": "freeze", "names": ["0"]}]}}
        first = c.post("/v1/jobs", json=body, headers={"idempotency-key": "json-1"})
        retry = c.post("/v1/jobs", json=body, headers={"idempotency-key": "json-1"})
        assert first.json()["id"] == retry.json()["id"]
        other = c.post("/v1/jobs", json={**body, "dry_run": True}, headers={"idempotency-key": "json-1"})
        assert other.status_code == 422 and other.json()["type"].endswith("/idempotency-key-reused")
        assert len(_jobs(c)) == len(before) + 2
    with client(url, "bob") as bob:  # keys are per tenant: Bob's "json-1" is his own
        r = bob.post("/v1/jobs", json={"model": "nope"}, headers={"idempotency-key": "json-1"})
        assert r.status_code == 404


def test_a_key_in_flight_is_409(service, tmp_path: Path) -> None:
    url, _ = service
    src = save(build("seq3", seed=12), tmp_path / "m.pt", "state_dict")
    data = src.read_bytes()
    release = threading.Event()
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m.pt\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def slow_body():
        yield head + data[:100]
        release.wait(30)
        yield data[100:] + tail

    results = {}

    def first() -> None:
        with client(url) as c:
            results["first"] = c.post("/v1/jobs", content=slow_body(), headers={
                "idempotency-key": "slow-1", "content-type": f"multipart/form-data; boundary={boundary}"})

    thread = threading.Thread(target=first)
    thread.start()
    try:
        time.sleep(0.5)
        with client(url) as c:
            busy = c.post("/v1/jobs", json={"model": "x"}, headers={"idempotency-key": "slow-1"})
        assert busy.status_code == 409 and busy.json()["type"].endswith("/idempotency-key-in-use")
    finally:
        release.set()
        thread.join(30)
    assert results["first"].status_code == 202
