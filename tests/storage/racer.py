"""One contender in a race on a shared database (tests/storage/test_races.py), run as its own process:

    python tests/storage/racer.py ACTION URL DATA_DIR START_AT N

waits until the wall-clock time START_AT, then tries ACTION on items 0..N-1 in its own random order and
prints what it won as JSON."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.idempotency import IdempotencyStore
from layerfreeze.storage.jobs import JobStore
from layerfreeze.storage.models import ModelFile, ModelRecord, ModelStore


def main() -> None:
    action, url, data_dir, start_at, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), \
        int(sys.argv[5])
    blobs = BlobStore(data_dir)
    store = JobStore(blobs.db_path, url)
    models = ModelStore(store, blobs)
    keys = IdempotencyStore(store)
    order = list(range(n))
    random.shuffle(order)
    time.sleep(max(0.0, start_at - time.time()))
    won: list[str] = []
    for i in order:
        if action == "claim":
            if store.claim(f"job{i}") is not None:
                won.append(f"job{i}")
        elif action == "idempotency":
            if keys.claim("tenant", f"key{i}") is None:
                won.append(f"key{i}")
        elif action == "model":
            sha = f"{i:064x}"
            mine = f"m{i}-{random.getrandbits(64):x}"
            record, new = models.create(ModelRecord(
                id=mine, tenant="tenant", sha256=sha, bytes=1, format="torch-zip", created_at=time.time(),
                summary={}, files=(ModelFile("m.pt", 1, sha),)))
            if new:
                won.append(record.id)
            elif record.id == mine or not record.id.startswith(f"m{i}-"):
                raise SystemExit(f"a second model was recorded for content {i}: {record.id}")
    store.close()
    print(json.dumps(won))


if __name__ == "__main__":
    main()
