"""A short bounded load run (``make stress`` runs the full 32 clients x 60 s): no lost or wrong job,
flat server memory, workers far below the size of the files they process."""

from __future__ import annotations

from pathlib import Path

import pytest

from adversarial._support import require
from stress import load
from stress.server import Service

pytestmark = [pytest.mark.server, pytest.mark.heavy]


def test_short_load(tmp_path: Path) -> None:
    require("layerfreeze.server")
    files = load.make_files(tmp_path / "files")
    (tmp_path / "out").mkdir()
    with Service(tmp_path / "data") as svc:
        svc.warm_up()
        rep = load.run(svc, files, clients=8, seconds=15, big_every=10, work=tmp_path / "out")
    for k, v in rep.rows():
        print(f"{k:34s} {v}")
    assert not rep.wrong, rep.wrong[:5]
    assert rep.jobs_ok >= 20 and rep.big_jobs >= 1
    assert not {k: v for k, v in rep.errors.items() if "retried" not in k}
    m = rep.memory_summary()
    # flat: the server does not grow with the number of jobs; a worker never holds a whole ~100 MB file
    assert m["server_last_third_max"] - m["server_first_third_max"] < 64, m
    assert m["worker_max"] < 400, m
