"""``Idempotency-Key`` on the POSTs that create something (jobs, models).

    idem = begin(request, service, tenant)        # 409 when the key's first request is still running
    replay = idem.replay(fingerprint)             # the first answer (same payload) or 422 (another one)
    ...
    idem.complete(fingerprint, response)          # or idem.release() when the request failed

The fingerprint is the meaning of the payload (the uploaded file's sha256, the spec, ...), not its bytes:
a retried multipart upload has another boundary but the same content.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Request, Response

from layerfreeze.api.problems import BadRequest, IdempotencyConflict, IdempotencyMismatch
from layerfreeze.storage.idempotency import IdempotencyStore, StoredAnswer

MAX_KEY = 255
_REPLAYED_HEADERS = ("location", "content-type")


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Idempotency:
    def __init__(self, store: IdempotencyStore | None, tenant: str, key: str | None,
                 stored: StoredAnswer | None) -> None:
        self.store = store
        self.tenant = tenant
        self.key = key
        self.stored = stored

    def replay(self, print_: str) -> Response | None:
        if self.stored is None:
            return None
        if self.stored.fingerprint != print_:
            raise IdempotencyMismatch("this Idempotency-Key was used with another request payload; "
                                      "use a new key for a new request")
        headers = {**self.stored.headers, "idempotent-replayed": "true"}
        return Response(self.stored.body, status_code=self.stored.status or 200, headers=headers)

    def complete(self, print_: str, response: Response) -> None:
        if self.store is None or self.key is None or self.stored is not None:
            return
        headers = {k: v for k, v in response.headers.items() if k in _REPLAYED_HEADERS}
        self.store.complete(self.tenant, self.key, print_, response.status_code, headers,
                            bytes(response.body))

    def release(self) -> None:
        if self.store is not None and self.key is not None and self.stored is None:
            self.store.release(self.tenant, self.key)


def begin(request: Request, store: IdempotencyStore, tenant: str | None) -> Idempotency:
    key = request.headers.get("idempotency-key")
    if key is None:
        return Idempotency(None, tenant or "", None, None)
    key = key.strip().strip('"')
    if not key or len(key) > MAX_KEY:
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY} characters")
    stored = store.claim(tenant or "", key)
    if stored is not None and stored.status is None:
        raise IdempotencyConflict("a request with this Idempotency-Key is still being processed; retry "
                                  "once it has answered", retry_after=1)
    return Idempotency(store, tenant or "", key, stored)
