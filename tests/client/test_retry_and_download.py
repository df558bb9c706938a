from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from layerfreeze_client import IntegrityError, Retry
from layerfreeze_client._download import digest_from_headers, filename_from_disposition
from layerfreeze_client._retry import parse_retry_after


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_grows_is_capped_and_jittered() -> None:
    retry = Retry(retries=10, backoff=1.0, max_backoff=8.0, jitter=0.5)
    for attempt in range(10):
        base = min(8.0, 2.0**attempt)
        delays = [retry.backoff_delay(attempt) for _ in range(50)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(set(delays)) > 1  # clients told to wait do not all come back at once
    request = httpx.Request("GET", "http://x/")
    busy = httpx.Response(503, headers={"Retry-After": "3"}, request=request)
    assert 3.0 <= retry.delay_for_response(busy, 0) <= 3.5
    assert retry.delay_for_response(httpx.Response(503, headers={"Retry-After": "3600"}), 0) is None
    assert retry.delay_for_response(busy, 10) is None  # out of attempts
    assert retry.delay_for_response(httpx.Response(500), 0) is None
    assert retry.delay_for_error(httpx.ConnectError("x"), 0) is not None
    assert retry.delay_for_error(httpx.ConnectError("x"), 0, replayable=False) is None
    assert retry.delay_for_error(ValueError("x"), 0) is None
    with pytest.raises(ValueError):
        Retry(jitter=2)


@pytest.mark.parametrize(
    ("header", "name"),
    [('attachment; filename="model.frozen.pt"', "model.frozen.pt"),
     ('attachment; filename="../../etc/passwd"', "passwd"),
     ("attachment; filename=plain.bin", "plain.bin"),
     ("attachment; filename*=UTF-8''mod%C3%A8le.frozen.pt", "modèle.frozen.pt"),
     ('attachment; filename=".."', None), ("attachment", None), (None, None)],
)
def test_download_names_are_bare_file_names(header: str | None, name: str | None) -> None:
    assert filename_from_disposition(header) == name


def test_digests_from_etag_and_repr_digest() -> None:
    digest = hashlib.sha256(b"data").digest()
    headers = httpx.Headers({"ETag": f'"{digest.hex()}"',
                             "Repr-Digest": f"sha-512=:AAAA:, sha-256=:{base64.b64encode(digest).decode()}:"})
    assert digest_from_headers(headers) == {"etag": digest.hex(), "repr-digest": digest.hex()}
    assert digest_from_headers(httpx.Headers({"ETag": f'W/"{digest.hex()}"'})) == {}  # weak: not a hash
    assert digest_from_headers(httpx.Headers({"ETag": '"1234-5678"'})) == {}  # mtime-size style
    with pytest.raises(IntegrityError):
        digest_from_headers(httpx.Headers({"Repr-Digest": "sha-256=:not base64!:"}))
