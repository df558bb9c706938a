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

from sqlalchemy import text

from layerfreeze.storage.jobs import JobStore


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    fingerprint: str
    status: int | None  # None: the first request is still in flight
    headers: dict[str, str]
    body: bytes


class IdempotencyStore:
    def __init__(self, jobs: JobStore) -> None:
        self.db = jobs.db

    def claim(self, tenant: str, key: str) -> StoredAnswer | None:
        """None when the key is now ours; else what is stored under it (in flight or answered). Of
        concurrent claims in any processes, exactly one gets None (the primary key decides)."""
        with self.db.tx() as db:
            mine = db.execute(text("INSERT INTO idempotency (tenant, key, fingerprint, created_at) "
                                   "VALUES (:tenant, :key, '', :now) ON CONFLICT (tenant, key) DO NOTHING "
                                   "RETURNING tenant"),
                              {"tenant": tenant, "key": key, "now": time.time()}).fetchone()
            if mine is not None:
                return None
            row = db.execute(text("SELECT fingerprint, status, headers, body FROM idempotency "
                                  "WHERE tenant=:tenant AND key=:key"),
                             {"tenant": tenant, "key": key}).fetchone()
        if row is None:  # released by its holder between the two statements: in flight as far as we know
            return StoredAnswer("", None, {}, b"")
        fingerprint, status, headers, body = row
        return StoredAnswer(fingerprint, status, json.loads(headers) if headers else {}, bytes(body or b""))

    def complete(self, tenant: str, key: str, fingerprint: str, status: int, headers: dict[str, str],
                 body: bytes) -> None:
        with self.db.tx() as db:
            db.execute(text("UPDATE idempotency SET fingerprint=:fingerprint, status=:status, "
                            "headers=:headers, body=:body WHERE tenant=:tenant AND key=:key"),
                       {"fingerprint": fingerprint, "status": status, "headers": json.dumps(headers),
                        "body": body, "tenant": tenant, "key": key})

    def release(self, tenant: str, key: str) -> None:
        with self.db.tx() as db:
            db.execute(text("DELETE FROM idempotency WHERE tenant=:tenant AND key=:key AND status IS NULL"),
                       {"tenant": tenant, "key": key})

    def expire(self, before: float) -> int:
        with self.db.tx() as db:
            return db.execute(text("DELETE FROM idempotency WHERE created_at < :before"),
                              {"before": before}).rowcount
