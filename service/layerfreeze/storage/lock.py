"""One service per data directory: an exclusive ``flock`` on ``<data_dir>/service.lock``, held for the
life of the process.

A second service on the same directory would run start-up recovery and mark the first one's running jobs
"interrupted by restart"; the lock is taken before any recovery, so it fails first, naming the holder
(its pid and address, written into the lock file). The kernel drops the lock when the holder exits, however
it exits, so a stale file never blocks a restart. Workers are spawned (exec), so they do not inherit it.
Within one process the lock is shared (taken again, it is counted, not re-locked).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from layerfreeze.errors import DataDirInUse

LOCK_NAME = "service.lock"

_held: dict[Path, list[int]] = {}  # resolved data dir -> [fd, count]
_guard = threading.Lock()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, serving {info['address']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


def acquire(data_dir: Path, address: str) -> Path:
    """Lock ``data_dir`` for this process (``address``: where it serves, for the message); raise
    DataDirInUse naming the holder when another process has it. Returns the resolved directory."""
    root = Path(data_dir).resolve()
    with _guard:
        if root in _held:
            _held[root][1] += 1
            return root
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DataDirInUse(
                f"the data directory {root} is in use by another layerfreeze service ({holder}); "
                "stop it first, or give this one its own LAYERFREEZE_DATA_DIR",
                data_dir=str(root)) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "address": address, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _held[root] = [fd, 1]
        return root


def release(data_dir: Path) -> None:
    root = Path(data_dir).resolve()
    with _guard:
        entry = _held.get(root)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[root]
            os.close(entry[0])  # closing the last descriptor drops the flock


__all__ = ["LOCK_NAME", "acquire", "release"]
