"""The upload receiver (api/uploads.py) fed a multipart body chunk by chunk, as the server hands it over:
the model part lands whole in the temporary file with its digest, the fields come back as text, and a
body that is too large, malformed, cut short or ambiguous is refused (413 / 400 / 415) without leaving
a file behind."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from layerfreeze.api.uploads import MAX_PARTS, Upload, clean_filename, receive_upload
from layerfreeze.errors import LayerfreezeError
from layerfreeze.problems import problem_for
from starlette.requests import Request

MODEL = bytes(range(256)) * 300  # 75 KiB, not valid UTF-8
SPEC = '{"rules": [{"action": "freeze", "names": ["0"]}]}'


def form(files: dict | None = None, data: dict | None = None) -> tuple[bytes, dict[str, str]]:  # type: ignore[type-arg]
    """A multipart body and its headers, encoded the way an HTTP client encodes it."""
    req = httpx.Request("POST", "http://127.0.0.1/v1/jobs", files=files, data=data)
    return req.read(), dict(req.headers)


def request(chunks: Iterable[bytes] | None, headers: dict[str, str], *, disconnect: bool = False) -> Request:
    """A request whose body arrives in ``chunks`` (then a disconnect, if asked); ``None``: reading the
    body at all fails the test."""
    pending = list(chunks or ())

    async def receive() -> dict:  # type: ignore[type-arg]
        assert chunks is not None, "the body was read"
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending) or disconnect}
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


def split(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


def receive(req: Request, tmp: Path, max_file: int = 1 << 20, max_field: int = 4096) -> Upload:
    return asyncio.run(receive_upload(req, tmp, max_file_bytes=max_file, max_field_bytes=max_field))


def refused(req: Request, tmp: Path, **caps: int) -> int:
    """The HTTP status the refusal maps to; the temporary file must be gone."""
    with pytest.raises(LayerfreezeError) as err:
        receive(req, tmp, **caps)
    assert not tmp.exists()
    return int(problem_for(err.value)["status"])


@pytest.mark.parametrize("chunk", [1 << 20, 1000, 7])
def test_the_model_part_lands_whole_with_its_digest(tmp_path: Path, chunk: int) -> None:
    body, headers = form({"model": ("resnet.pt", MODEL)}, {"spec": SPEC, "note": "é"})
    up = receive(request(split(body, chunk), headers), tmp_path / "upload")
    assert up.path.read_bytes() == MODEL
    assert (up.bytes, up.sha256) == (len(MODEL), hashlib.sha256(MODEL).hexdigest())
    assert up.filename == "resnet.pt" and up.fields == {"spec": SPEC, "note": "é"}


def test_an_empty_model_file_is_received_as_empty(tmp_path: Path) -> None:
    body, headers = form({"model": ("m.pt", b"")})
    up = receive(request([body], headers), tmp_path / "upload")
    assert up.bytes == 0 and up.path.read_bytes() == b"" and up.fields == {}


@pytest.mark.parametrize(("raw", "clean"), [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\me\\model.pt", "model.pt"), ("a\x00b\nc.pt", "abc.pt"),
    ("", "model"), (None, "model"), ("..", "model"), ("  many   spaces.pt ", "many spaces.pt"),
    ("x" * 500, "x" * 200),
])
def test_client_file_names_are_reduced_to_a_safe_base_name(raw: str | None, clean: str) -> None:
    assert clean_filename(raw) == clean


def test_a_declared_length_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    _, headers = form({"model": ("m.pt", MODEL)})
    assert refused(request(None, headers), tmp_path / "upload", max_file=1024, max_field=16) == 413


def test_a_model_over_the_cap_is_refused_while_streaming(tmp_path: Path) -> None:
    body, headers = form({"model": ("m.pt", MODEL)})
    headers.pop("content-length")  # chunked: nothing declared up front
    assert refused(request(split(body, 4096), headers), tmp_path / "upload", max_file=len(MODEL) - 1) == 413


def test_a_field_over_its_cap_is_refused(tmp_path: Path) -> None:
    body, headers = form({"model": ("m.pt", b"x")}, {"spec": "x" * 5000})
    assert refused(request([body], headers), tmp_path / "upload", max_field=4096) == 413


def test_not_multipart_is_unsupported_media_type(tmp_path: Path) -> None:
    assert refused(request([b"{}"], {"content-type": "application/json"}), tmp_path / "upload") == 415


@pytest.mark.parametrize("case", ["two-models", "field-twice", "no-model", "too-many-parts"])
def test_ambiguous_or_incomplete_forms_are_bad_requests(tmp_path: Path, case: str) -> None:
    boundary = "b0undary"
    parts = {
        "two-models": [("model", "a.pt", b"1"), ("model", "b.pt", b"2")],
        "field-twice": [("model", "a.pt", b"1"), ("spec", None, b"{}"), ("spec", None, b"{}")],
        "no-model": [("spec", None, b"{}")],
        "too-many-parts": [("model", "a.pt", b"1"), *[(f"f{i}", None, b"x") for i in range(MAX_PARTS)]],
    }[case]
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}", "content-length": str(len(body))}
    assert refused(request([body], headers), tmp_path / "upload") == 400


def test_a_body_cut_short_is_a_bad_request(tmp_path: Path) -> None:
    body, headers = form({"model": ("m.pt", MODEL)})
    assert refused(request([body[: len(body) // 2]], headers), tmp_path / "upload") == 400


def test_a_client_that_disconnects_mid_upload_leaves_nothing(tmp_path: Path) -> None:
    body, headers = form({"model": ("m.pt", MODEL)})
    assert refused(request(split(body[: len(body) // 2], 4096), headers, disconnect=True),
                   tmp_path / "upload") == 400


def test_a_field_that_is_not_utf8_is_a_bad_request(tmp_path: Path) -> None:
    body, headers = form({"model": ("m.pt", b"x")}, {"spec": "PLACEHOLDER"})
    body = body.replace(b"PLACEHOLDER", b"\xff\xfe\xfd")
    assert refused(request([body], headers), tmp_path / "upload") == 400
