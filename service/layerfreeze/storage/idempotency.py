"""Idempotency keys (the IETF ``Idempotency-Key`` draft), per tenant, in the job database.

A key is claimed before its request does anything (``claim``); a second request with the key while the
first is in flight is refused; once the first has answered, its answer is stored (``complete``) and
replayed to every retry with the same payload. A request that fails with an error gives the key back
(``release``), so the retry runs again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from layerfreeze.storage.jobs import JobStore


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    fingerprint: str
    status: int | None  # None: the first request is still in flight
    headers: dict[str, str]
    body: bytes


class IdempotencyStore:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def claim(self, tenant: str, key: str) -> StoredAnswer | None:
        """None when the key is now ours; else what is stored under it (in flight or answered)."""
        with self.jobs._tx() as db:
            row = db.execute("SELECT fingerprint, status, headers, body FROM idempotency "
                             "WHERE tenant=? AND key=?", (tenant, key)).fetchone()
            if row is None:
                db.execute("INSERT INTO idempotency (tenant, key, fingerprint, created_at) "
                           "VALUES (?, ?, '', ?)", (tenant, key, time.time()))
                return None
        fingerprint, status, headers, body = row
        return StoredAnswer(fingerprint, status, json.loads(headers) if headers else {}, body or b"")

    def complete(self, tenant: str, key: str, fingerprint: str, status: int, headers: dict[str, str],
                 body: bytes) -> None:
        with self.jobs._tx() as db:
            db.execute("UPDATE idempotency SET fingerprint=?, status=?, headers=?, body=? "
                       "WHERE tenant=? AND key=?",
                       (fingerprint, status, json.dumps(headers), body, tenant, key))

    def release(self, tenant: str, key: str) -> None:
        with self.jobs._tx() as db:
            db.execute("DELETE FROM idempotency WHERE tenant=? AND key=? AND status IS NULL", (tenant, key))

    def expire(self, before: float) -> int:
        with self.jobs._tx() as db:
            return db.execute("DELETE FROM idempotency WHERE created_at < ?", (before,)).rowcount
