"""``/proc`` walkers (Linux): process trees, the service's pool workers, resident memory; ending a
process started in a session of its own."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def parent_of(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the command name in (...) may hold spaces


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (ppid := parent_of(int(entry.name))) is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pool_workers(pid: int) -> list[int]:
    """The multiprocessing (spawn) workers below ``pid``; not its resource tracker."""
    return [p for p in descendants(pid) if "spawn_main" in cmdline(p)]


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie not yet reaped."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` now (VmRSS); 0.0 once it has gone."""
    return (_status_kib(pid, "VmRSS") or 0) / 1024


def peak_rss_mib() -> float:
    """Peak resident memory of this process. VmHWM starts afresh at exec (``ru_maxrss`` keeps a forking
    parent's peak across fork + exec, so a large parent would hide the figure); elsewhere ru_maxrss."""
    kib = _status_kib("self", "VmHWM")
    return kib / 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024



def end_session(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
    """Send ``sig`` to a process started with ``start_new_session`` (SIGTERM: a graceful stop; SIGKILL: a
    crash), wait up to ``timeout``, then kill whatever is left of its session (children orphaned by a
    crash must not keep a port or a data directory busy). Its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    return proc.returncode
