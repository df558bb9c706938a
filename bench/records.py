"""The record stores' cost per job, on the SQLite file and on PostgreSQL, side by side.

    python bench/records.py [--jobs 500] [--threads 1,4]

Each round records --jobs jobs the way the service does (an upload adopted as a blob and pinned, the job
created, the pin dropped, the job claimed, succeeded and read back) with N threads sharing one store, and
prints jobs per second for each database and the ratio. PostgreSQL is a throw-away local cluster
(testing/postgres.py, without fsync), so its figure is the client and server CPU, not a disk's; the SQLite
figure includes its fsyncs (synchronous=FULL), as in production.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test kit (testing/), also when run as a file
sys.path.insert(0, str(ROOT / "service"))

from layerfreeze.storage.blobs import BlobStore  # noqa: E402
from layerfreeze.storage.jobs import JobRecord, JobStore  # noqa: E402
from layerfreeze.storage.models import ModelStore  # noqa: E402

from testing.postgres import PostgresCluster  # noqa: E402


def one_job(store: JobStore, models: ModelStore, blobs: BlobStore, n: int, tag: str) -> None:
    data = f"{tag}-{n}".encode()
    sha = hashlib.sha256(data).hexdigest()
    tmp = blobs.temp_path()
    tmp.write_bytes(data)
    models.adopt_blob(tmp, sha, len(data))
    job_id = f"{tag}-{n}"
    store.create(JobRecord(id=job_id, tenant="", status="queued", created_at=time.time(), dry_run=False,
                           spec="{}", input_filename="m.pt", input_bytes=len(data), input_sha256=sha))
    models.unpin(sha)
    assert store.claim(job_id) is not None
    store.succeed(job_id, output_bytes=1, output_sha256=None)
    assert store.get(job_id).status == "succeeded"


def rate(url: str, root: Path, jobs: int, threads: int) -> float:
    blobs = BlobStore(root / f"data-{threads}-{'pg' if url else 'sqlite'}")
    blobs.prepare()
    store = JobStore(blobs.db_path, url)
    models = ModelStore(store, blobs)

    def work(k: int) -> None:
        for n in range(k, jobs, threads):
            one_job(store, models, blobs, n, f"t{threads}")

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    store.close()
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--threads", default="1,4")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="layerfreeze-bench-records-"))
    try:
        with PostgresCluster() as pg:
            print(f"{'threads':>7}  {'sqlite jobs/s':>13}  {'postgresql jobs/s':>17}  {'pg/sqlite':>9}")
            for threads in (int(t) for t in args.threads.split(",")):
                lite = rate("", root, args.jobs, threads)
                url = pg.create_database("bench")
                post = rate(url, root, args.jobs, threads)
                print(f"{threads:>7}  {lite:>13.0f}  {post:>17.0f}  {post / lite:>9.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
