"""Progress reporting: a tqdm bar, a user callback ``(done, total)``, or nothing.

A bar (``progress=True``) is drawn only when stderr is a terminal: written to a pipe or a log file, a bar is
a stream of carriage returns that ends at whatever it showed last.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Union

__all__ = ["Progress", "ProgressLike"]

ProgressLike = Union[bool, Callable[[int, int | None], Any], None]  # noqa: UP007 (a runtime alias)


class Progress:
    """Counts bytes; forwards to a tqdm bar (``True``) or a callback, and can restart for a retry."""

    def __init__(self, progress: ProgressLike, total: int | None, desc: str) -> None:
        self.total = total
        self.done = 0
        self._callback: Callable[[int, int | None], Any] | None = None
        self._bar: Any = None
        if callable(progress):
            self._callback = progress
        elif progress:
            from tqdm.auto import tqdm

            # disable=None: tqdm draws only on a terminal. leave=True: the last state (100%) stays on screen.
            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                             file=sys.stderr, leave=True, dynamic_ncols=True, disable=None)

    def update(self, n: int) -> None:
        if not n:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def restart(self, done: int = 0) -> None:
        """Start over (a retried upload) or from ``done`` (a resumed download)."""
        self.done = done
        if self._bar is not None:
            self._bar.reset(total=self.total)
            self._bar.update(done)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
