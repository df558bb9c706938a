"""No small request stalls the service: expensive specs, half-sent heads, huge headers and malformed
numbers, each against a real server with ``/healthz`` probed on new connections while it runs.

The server runs with 256 file descriptors, as a small host has; the figures are printed (``-s``)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from adversarial._support import require
from stress import stalls
from stress.server import Service

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    require("layerfreeze.server")
    settings = {"LAYERFREEZE_MAX_UPLOAD_BYTES": str(4 << 20), "LAYERFREEZE_HEADER_TIMEOUT_S": "2"}
    with Service(tmp_path_factory.mktemp("stalls") / "data", settings, nofile=256) as service:
        service.warm_up()
        yield service


def _model() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Linear(4, 2).state_dict(), buf)
    return buf.getvalue()


def _report(outcome: stalls.Outcome) -> None:
    print(outcome.row())
    assert outcome.probe.latencies, outcome.probe.failures
    assert not outcome.probe.failures, outcome.probe.failures[:3]
    assert max(outcome.probe.latencies) < stalls.HEALTHZ_MAX_S, outcome.probe.figures()
    assert outcome.ok, outcome.row()


def test_expensive_specs_are_refused_without_stalling(svc: Service) -> None:
    for name, spec in stalls.heavy_specs().items():
        t0 = time.perf_counter()
        r = httpx.post(svc.url + "/v1/jobs", files={"model": ("m.pt", _model())}, data={"spec": spec},
                       timeout=30)
        print(f"{name}: {r.status_code} in {time.perf_counter() - t0:.3f}s")
        assert r.status_code == 422, r.text[:300]
        assert r.headers["content-type"] == "application/problem+json"
        assert time.perf_counter() - t0 < 2
    _report(stalls.spec_flood(svc.port, seconds=3.0))


def test_half_sent_heads_neither_exhaust_descriptors_nor_block_healthz(svc: Service) -> None:
    outcome = stalls.half_heads(svc.port, connections=300, hold_s=3.0)
    _report(outcome)
    assert svc.alive()


def test_a_silent_or_half_sent_head_times_out(svc: Service) -> None:
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ")
        t0 = time.perf_counter()
        answer = s.recv(4096)
        waited = time.perf_counter() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert 1.5 < waited < 5
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
        t0 = time.perf_counter()
        assert s.recv(4096) == b""  # nothing sent: closed without an answer
        assert 1.5 < time.perf_counter() - t0 < 5


def test_a_keep_alive_connection_serves_several_requests_and_then_closes(svc: Service) -> None:
    with httpx.Client(base_url=svc.url, timeout=10) as c:
        for _ in range(3):
            assert c.get("/healthz").status_code == 200
            time.sleep(0.5)


def test_huge_headers_get_431_quickly_without_stalling(svc: Service) -> None:
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 200_000 + b"\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 431 ")
    status, seconds = stalls.huge_header(svc.port, mib=8)
    assert status in (431, None) and seconds < 3, (status, seconds)  # None: reset after the answer
    r = httpx.get(svc.url + "/healthz", headers={"x-fill": "a" * 60_000}, timeout=10)
    assert r.status_code == 200  # a big but allowed head still works
    _report(stalls.huge_headers(svc.port, clients=4, mib=96))


def test_malformed_numbers_are_4xx_never_5xx(svc: Service) -> None:
    results = stalls.bad_numbers(svc.port, _model())
    for name, status, seconds in results:
        print(f"{name:32s} {status} {seconds:.3f}s")
    bad = [(n, s) for n, s, t in results if not 200 <= s < 500 or t > 2]
    assert not bad, bad
    by_name = {n: s for n, s, _ in results}
    assert by_name["Range: bytes=\\xb2-"] == 200  # an invalid Range is ignored (RFC 9110)
    assert by_name["Range of 5,000 digits"] == 416
    assert by_name["Range end of 5,000 digits"] == 206
    assert by_name["cursor = base64(10^20)"] == 400
    assert by_name["limit of 5,000 digits"] == 422


def test_uploads_per_tenant_are_capped_with_429(tmp_path_factory: pytest.TempPathFactory) -> None:
    require("layerfreeze.server")
    settings = {"LAYERFREEZE_TOKENS": "ta:alice,tb:bob", "LAYERFREEZE_MAX_UPLOADS_PER_TENANT": "2"}
    model = _model()
    with Service(tmp_path_factory.mktemp("tenants") / "data", settings) as service:
        stop = threading.Event()
        body_start = (f"--{stalls.BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"; "
                      "filename=\"m.pt\"\r\n\r\n").encode()

        def slow_upload(started: threading.Event) -> None:
            head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ta\r\n"
                    f"Content-Type: multipart/form-data; boundary={stalls.BOUNDARY}\r\n"
                    f"Content-Length: {1 << 20}\r\n\r\n").encode()
            with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
                s.sendall(head + body_start)
                started.set()
                while not stop.wait(0.1):
                    s.sendall(b"\0" * 16)

        events = [threading.Event(), threading.Event()]
        threads = [threading.Thread(target=slow_upload, args=(e,), daemon=True) for e in events]
        for t in threads:
            t.start()
        try:
            for e in events:
                assert e.wait(10)
            time.sleep(0.5)
            files, spec = {"model": ("m.pt", model)}, {"spec": "{}"}
            with httpx.Client(base_url=service.url, timeout=30) as c:
                r = c.post("/v1/jobs", headers={"Authorization": "Bearer ta"}, files=files, data=spec)
                assert r.status_code == 429, r.text[:300]
                assert r.headers["content-type"] == "application/problem+json"
                assert int(r.headers["retry-after"]) >= 1
                other = c.post("/v1/jobs", headers={"Authorization": "Bearer tb"}, files=files, data=spec)
                assert other.status_code == 202, other.text[:300]
                stop.set()
                for t in threads:
                    t.join(10)
                deadline = time.monotonic() + 10
                while True:  # the slots are free again once the slow uploads are gone
                    r = c.post("/v1/jobs", headers={"Authorization": "Bearer ta"}, files=files, data=spec)
                    if r.status_code != 429 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert r.status_code == 202, r.text[:300]
        finally:
            stop.set()


def test_over_the_connection_cap_stalled_heads_are_evicted_and_busy_requests_kept(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    require("layerfreeze.server")
    settings = {"LAYERFREEZE_MAX_CONNECTIONS": "4", "LAYERFREEZE_KEEPALIVE_TIMEOUT_S": "1"}
    with Service(tmp_path_factory.mktemp("cap") / "data", settings) as service:
        # an idle keep-alive connection is closed after keepalive_timeout_s
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            while not answer.endswith(b'{"status":"ok"}'):  # the body may come in a segment of its own
                more = s.recv(4096)
                assert more, answer
                answer += more
            t0 = time.perf_counter()
            assert s.recv(4096) == b""  # then nothing, until the idle connection is closed
            assert 0.5 < time.perf_counter() - t0 < 4
        # four uploads in progress fill the cap: a fifth connection is refused with 503, none is cut
        head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                f"boundary={stalls.BOUNDARY}\r\nContent-Length: {1 << 20}\r\n\r\n").encode()
        busy = [socket.create_connection(("127.0.0.1", service.port), timeout=10) for _ in range(4)]
        try:
            for s in busy:
                s.sendall(head + f"--{stalls.BOUNDARY}\r\n".encode())
            time.sleep(0.5)
            with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
                answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
            assert b"retry-after: 1" in answer.lower()
            for s in busy:
                s.setblocking(False)
                with pytest.raises(BlockingIOError):
                    s.recv(1)  # still open, still waiting for the rest of its body
        finally:
            for s in busy:
                s.close()
        # stalled heads never lock anyone out: each newcomer evicts the oldest of them
        stalled = [socket.create_connection(("127.0.0.1", service.port), timeout=10) for _ in range(20)]
        try:
            for s in stalled:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            assert stalls.healthz_once(service.port) < 1
        finally:
            for s in stalled:
                s.close()
