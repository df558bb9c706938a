"""State changes that several processes race on, against a real PostgreSQL database: every contender
runs in its own process (as API replicas and workers on other hosts do), and exactly one wins each item."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobRecord, JobStore
from layerfreeze.storage.models import ModelStore

RACER = Path(__file__).with_name("racer.py")
PROCESSES = 4
ITEMS = 40


def race(action: str, url: str, data_dir: Path, env: dict[str, str]) -> list[list[str]]:
    """Run PROCESSES racers on the same ITEMS at the same moment; what each won."""
    start_at = time.time() + 4  # all have imported and connected by then
    command = [sys.executable, str(RACER), action, url, str(data_dir), str(start_at), str(ITEMS)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(PROCESSES)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        results.append(json.loads(out))
    return results


def won_once(results: list[list[str]], expected: set[str]) -> None:
    counts = Counter(item for won in results for item in won)
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}


def test_each_queued_job_is_claimed_by_one_process(tmp_path: Path, postgres_url: str,
                                                   subprocess_env: dict[str, str]) -> None:
    blobs = BlobStore(tmp_path / "data")
    store = JobStore(blobs.db_path, postgres_url)
    for i in range(ITEMS):
        store.create(JobRecord(id=f"job{i}", tenant="", status="queued", created_at=time.time(),
                               dry_run=False, spec="{}", input_filename="m.pt", input_bytes=1,
                               input_sha256="0" * 64))
    results = race("claim", postgres_url, blobs.root, subprocess_env)
    won_once(results, {f"job{i}" for i in range(ITEMS)})
    assert store.count_by_status()["running"] == ITEMS
    store.close()


def test_each_idempotency_key_is_claimed_by_one_process(tmp_path: Path, postgres_url: str,
                                                        subprocess_env: dict[str, str]) -> None:
    JobStore(tmp_path / "unused", postgres_url).close()  # the schema, before the racers start
    results = race("idempotency", postgres_url, tmp_path / "data", subprocess_env)
    won_once(results, {f"key{i}" for i in range(ITEMS)})


def test_one_model_per_tenant_and_content(tmp_path: Path, postgres_url: str,
                                          subprocess_env: dict[str, str]) -> None:
    store = JobStore(tmp_path / "unused", postgres_url)
    results = race("model", postgres_url, tmp_path / "data", subprocess_env)
    assert len([m for won in results for m in won]) == ITEMS  # and the racers checked that losers got it
    models = ModelStore(store, BlobStore(tmp_path / "data"))
    assert {m.sha256 for m in models.list("tenant", 200, None)} == {f"{i:064x}" for i in range(ITEMS)}
    assert all(len(models.get(m).files) == 1 for m in models.ids())
    store.close()


def test_a_release_never_takes_a_blob_being_adopted(tmp_path: Path, postgres_url: str) -> None:
    """Holders in different "hosts" (own stores, own connection pools) adopt and give back the same content
    while others release it: whenever a holder has adopted it, its file and record are there."""
    blobs = BlobStore(tmp_path / "data")
    blobs.prepare()
    data = b"the same upload on every host"
    sha = hashlib.sha256(data).hexdigest()
    stores = [JobStore(blobs.db_path, postgres_url) for _ in range(3)]
    failures: list[str] = []
    deadline = time.monotonic() + 60

    def holder(models: ModelStore, rounds: int) -> None:
        for _ in range(rounds):
            if time.monotonic() > deadline:
                return
            tmp = blobs.temp_path()
            tmp.write_bytes(data)
            models.adopt_blob(tmp, sha, len(data))
            present = blobs.content.exists(sha) and bool(models.db.query(
                "SELECT 1 FROM blobs WHERE sha256=:sha", {"sha": sha}))
            if not present:
                failures.append("an adopted blob was missing")
            models.unpin(sha)  # releases it when no one else holds it

    def releaser(models: ModelStore, rounds: int) -> None:
        for _ in range(rounds):
            models.release(sha)

    threads = [threading.Thread(target=holder, args=(ModelStore(stores[0], blobs), 150)),
               threading.Thread(target=holder, args=(ModelStore(stores[1], blobs), 150)),
               threading.Thread(target=releaser, args=(ModelStore(stores[2], blobs), 300))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not failures, failures[:3]
    assert not any(t.is_alive() for t in threads)
    models = ModelStore(stores[2], blobs)
    assert models.release(sha) is False or not blobs.content.exists(sha)  # nothing held: gone
    assert not blobs.content.exists(sha)
    for store in stores:
        store.close()
