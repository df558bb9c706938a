"""Strict parsing of the numbers clients put in headers, query strings and cursors.

``str.isdigit()`` admits ``"²"`` and ``"٣"`` and ``int()`` admits signs, spaces, underscores and
thousands of digits (at a cost quadratic in their count); HTTP numbers are ASCII digits only.
"""

from __future__ import annotations

MAX_DIGITS = 18  # below 2**63: every value fits an SQLite integer and a file offset


def ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_uint(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of ``text`` when it is 1 to ``max_digits`` ASCII digits, else None."""
    if not text or len(text) > max_digits or not ascii_digits(text):
        return None
    return int(text)
