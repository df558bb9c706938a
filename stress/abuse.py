"""HTTP abuse over raw sockets against a live service on 127.0.0.1.

Each case sends something no honest client sends and expects a 4xx (or a clean close) quickly, with the
service still answering afterwards and no stray file left in (or outside) its data directory.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from stress.server import Service

BOUNDARY = "lfabuse7MA4YWxkTrZu0gW"


@dataclass(slots=True)
class Result:
    case: str
    status: int | None  # None: the connection was closed without a response
    seconds: float
    ok: bool
    detail: str = ""


def _status(raw: bytes) -> int | None:
    if raw.startswith(b"HTTP/1.1 ") or raw.startswith(b"HTTP/1.0 "):
        try:
            return int(raw[9:12])
        except ValueError:
            return None
    return None


def raw_exchange(
    port: int, head: bytes, body: Iterable[bytes] = (), timeout: float = 10.0
) -> tuple[int | None, bytes]:
    """Send a request head and body chunks; read until the server answers or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head)
            for chunk in body:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read what it said
        s.settimeout(timeout)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return _status(data), data


def _multipart_head(port: int, length: int | str, extra: str = "") -> bytes:
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _part(name: str, content: bytes, filename: str | None = None, headers: str = "") -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n{headers}\r\n").encode() + content + b"\r\n"


def _end() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def _timed(
    name: str,
    fn: Callable[[], tuple[int | None, str]],
    *,
    max_seconds: float,
    accept: Callable[[int | None], bool],
) -> Result:
    t0 = time.perf_counter()
    try:
        status, detail = fn()
    except OSError as exc:
        status, detail = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    return Result(name, status, seconds, accept(status) and seconds <= max_seconds, detail[:200])


def _is_4xx_or_close(status: int | None) -> bool:
    return status is None or 400 <= status < 500


def model_bytes() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)).state_dict(), buf)
    return buf.getvalue()


def run(svc: Service, cap: int) -> list[Result]:
    """All cases against ``svc`` (whose max upload is ``cap`` bytes)."""
    port, out = svc.port, []
    model = model_bytes()

    def send(head: bytes, body: Iterable[bytes] = ()) -> tuple[int | None, str]:
        status, raw = raw_exchange(port, head, body)
        return status, raw[:200].decode("latin-1")

    # 1 MB of near-boundaries around the parts and no model part at all
    junk = (b"\r\n--" + BOUNDARY[:-1].encode() + b"x") * (1_000_000 // (len(BOUNDARY) + 4))
    body = junk + _part("spec", b"{}") + junk[:500_000] + _end() + junk[:500_000]
    out.append(
        _timed(
            "1 MB junk around boundaries",
            lambda: send(_multipart_head(port, len(body)), [body]),
            max_seconds=2.0,
            accept=_is_4xx_or_close,
        )
    )
    # the CVE-2024-53981 shape: a long run of CR/LF in the preamble
    body = b"\r\n" * 500_000 + _part("model", model, "m.pt") + _end()
    out.append(
        _timed(
            "1 MB CR/LF preamble",
            lambda: send(_multipart_head(port, len(body)), [body]),
            max_seconds=2.0,
            accept=lambda s: s is None or 200 <= s < 500,
        )
    )
    headers = "".join(f"X-H{i}: {'v' * 20}\r\n" for i in range(10_000))
    body = _part("model", model, "m.pt", headers) + _end()
    out.append(
        _timed(
            "10,000 part headers",
            lambda: send(_multipart_head(port, len(body)), [body]),
            max_seconds=2.0,
            accept=_is_4xx_or_close,
        )
    )
    body = _part("model", model, "m.pt") + _end()
    out.append(
        _timed(
            "Content-Length: -1",
            lambda: send(_multipart_head(port, -1), [body]),
            max_seconds=1.0,
            accept=_is_4xx_or_close,
        )
    )
    out.append(
        _timed(
            "Content-Length: junk",
            lambda: send(_multipart_head(port, "12abc"), [body]),
            max_seconds=1.0,
            accept=_is_4xx_or_close,
        )
    )
    out.append(
        _timed(
            "Content-Length: 2^64",
            lambda: send(_multipart_head(port, 1 << 64), [body]),
            max_seconds=1.0,
            accept=_is_4xx_or_close,
        )
    )
    out.append(
        _timed(
            "declared body over the cap",
            lambda: send(_multipart_head(port, cap * 100), [body]),
            max_seconds=1.0,
            accept=lambda s: s == 413 or s is None,
        )
    )

    def over_cap_chunked() -> tuple[int | None, str]:
        head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}"
            "\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        start = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"; filename="m.pt"\r\n\r\n'
        block = b"\0" * 65536
        chunks = [b"%x\r\n%s\r\n" % (len(start), start.encode())]
        chunks += [b"%x\r\n%s\r\n" % (len(block), block)] * (cap // len(block) + 64)
        return send(head, chunks)

    out.append(
        _timed(
            "streamed body over the cap (chunked)",
            over_cap_chunked,
            max_seconds=5.0,
            accept=lambda s: s == 413 or s is None,
        )
    )
    out.append(
        _timed(
            "not multipart",
            lambda: send(
                b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\n\r\n{}"
            ),
            max_seconds=1.0,
            accept=_is_4xx_or_close,
        )
    )
    out.append(
        _timed(
            "no boundary",
            lambda: send(
                b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data\r\n"
                b"Content-Length: 4\r\n\r\nabcd"
            ),
            max_seconds=1.0,
            accept=_is_4xx_or_close,
        )
    )
    out += _ranges(svc, model)
    out += _filenames(svc, model)
    out.append(_slow_clients(svc, model))
    return out


def _ranges(svc: Service, model: bytes) -> list[Result]:
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        job = c.post(
            "/v1/jobs", params={"wait": 30}, files={"model": ("m.pt", model)}, data={"spec": "{}"}
        ).json()
        art = job["links"]["artifact"]
        many = "bytes=" + ",".join(f"{i * 2}-{i * 2}" for i in range(10_000))
        overlapping = "bytes=" + ",".join("0-" for _ in range(10_000))
        out = []
        for name, rng in (
            ("10,000 Range parts", many),
            ("10,000 overlapping ranges", overlapping),
            ("Range: garbage", "bytes=zz-1"),
            ("Range: past the end", "bytes=99999999-"),
        ):

            def get(rng: str = rng) -> tuple[int | None, str]:
                r = c.get(art, headers={"Range": rng})
                return r.status_code, f"{r.status_code} {len(r.content)} bytes"

            # a full 200, a 206 or a 416 are all honest answers; what matters is no 5xx and no stall
            out.append(_timed(name, get, max_seconds=1.0, accept=lambda s: s in (200, 206, 416)))
    return out


def _filenames(svc: Service, model: bytes) -> list[Result]:
    out = []
    parent = svc.data_dir.parent
    before = {p for p in parent.rglob("*") if svc.data_dir not in p.parents and p != svc.data_dir}
    names = {
        "../../x": "../../x",
        "absolute path": "/tmp/lf-abs-x",
        "NUL byte": "a\x00b.pt",
        "10,000 chars": "a" * 10_000 + ".pt",
        "backslashes": "..\\..\\x.pt",
        "CR/LF": "a\r\nX-Evil: 1.pt",
    }
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        for label, fname in names.items():

            def post(fname: str = fname) -> tuple[int | None, str]:
                body = _part("model", model, fname.replace('"', "")) + _end()
                status, raw = raw_exchange(svc.port, _multipart_head(svc.port, len(body)) + body)
                detail = raw.decode("latin-1", "replace")
                if status in (200, 202):  # accepted: the stored and served names must be harmless
                    location = [ln for ln in detail.split("\r\n") if ln.lower().startswith("location:")]
                    job_id = location[0].split("/")[-1].strip()
                    job = c.get(f"/v1/jobs/{job_id}", params={}).json()
                    shown = job["input"]["filename"]
                    if any(ch in shown for ch in "/\\\0\r\n") or len(shown) > 1000:
                        return 599, f"unsafe stored filename {shown[:80]!r}"
                return status, detail[:120]

            out.append(
                _timed(
                    f"file name: {label}", post, max_seconds=1.0, accept=lambda s: s is not None and s < 500
                )
            )
    after = {p for p in parent.rglob("*") if svc.data_dir not in p.parents and p != svc.data_dir}
    stray = [p for p in after - before if not p.name.startswith("server-")]
    if stray or Path("/tmp/lf-abs-x").exists():
        out.append(Result("file names: stray files outside the data dir", None, 0, False, str(stray[:3])))
    return out


def _slow_clients(svc: Service, model: bytes, n: int = 4, seconds: float = 6.0) -> Result:
    """n uploads trickle one byte every 50 ms; meanwhile /healthz and a whole job must stay quick."""
    stop = threading.Event()

    def trickle() -> None:
        body = _part("model", model, "slow.pt") + _end()
        try:
            with socket.create_connection(("127.0.0.1", svc.port), timeout=seconds + 5) as s:
                s.sendall(_multipart_head(svc.port, len(body)))
                for i in range(len(body)):
                    if stop.is_set():
                        return
                    s.sendall(body[i : i + 1])
                    time.sleep(0.05)
        except OSError:
            return

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    worst_health, job_seconds, status = 0.0, 0.0, None
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            c.get("/healthz")
            worst_health = max(worst_health, time.perf_counter() - t0)
            time.sleep(0.2)
        t0 = time.perf_counter()
        r = c.post("/v1/jobs", params={"wait": 20}, files={"model": ("m.pt", model)}, data={"spec": "{}"})
        job_seconds, status = time.perf_counter() - t0, r.status_code
    stop.set()
    for t in threads:
        t.join(5)
    ok = status == 200 and worst_health < 0.5 and job_seconds < 5
    return Result(
        f"{n} slow uploads trickling ({seconds:.0f}s)",
        status,
        job_seconds,
        ok,
        f"healthz worst {worst_health * 1000:.0f} ms, a job meanwhile {job_seconds:.2f}s -> {status}",
    )


def leftovers(svc: Service) -> list[Path]:
    """Files in the data dir that belong to no job or model the API knows (temporary uploads left
    behind). Uploads live in ``blobs/`` by sha256: each must be some known job's input or model's file."""
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        known: set[str] = set()
        shas: set[str] = set()
        for listing in ("/v1/jobs?limit=100", "/v1/models?limit=100"):
            url: str | None = listing
            while url:
                page = c.get(url).json()
                known |= {item["id"] for item in page["items"]}
                shas |= {(item.get("input") or item)["sha256"] for item in page["items"]}
                url = page.get("next")
    out = []
    for p in svc.data_dir.rglob("*"):
        if p.is_dir() or p.name.startswith("jobs.sqlite3"):
            continue
        rel = p.relative_to(svc.data_dir).parts
        if rel[0] in ("jobs", "models") and len(rel) > 1 and rel[1] in known:
            continue
        if rel[0] == "blobs" and p.name in shas:
            continue
        out.append(p)
    return out
