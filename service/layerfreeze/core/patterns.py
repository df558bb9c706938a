"""Name patterns, compiled once per spec, matched against dotted parameter names.

A glob is matched **segment by segment**: ``*``, ``?``, ``[0-5]`` and ``[!x]`` (or ``[^x]``) stay inside
one segment, ``**`` spans any number of segments (zero included). A glob selects a name when it matches
the name itself or any of its dotted prefixes (the modules that contain it), so ``0`` selects ``0.weight`` but
never ``10.weight``, and ``head`` never ``decode_head.weight``.

Each glob becomes one regular expression over ``"." + name``: a literal segment ``S`` is ``\\.S``,
``**`` is ``(?:\\.[^.]+)*``, and a trailing ``(?:\\..*)?`` lets it stop at a containing module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SEGMENT_CHAR = r"[^.]"


class GlobError(ValueError):
    """A malformed glob (unbalanced ``[``, empty segment, bad range)."""


def _translate_segment(segment: str) -> str:
    """fnmatch-style translation of one segment, never crossing a dot."""
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        i += 1
        if c == "*":
            while i < n and segment[i] == "*":
                i += 1
            out.append(_SEGMENT_CHAR + "*")
        elif c == "?":
            out.append(_SEGMENT_CHAR)
        elif c == "[":
            j = i
            if j < n and segment[j] in "!^":
                j += 1
            if j < n and segment[j] == "]":  # a leading ']' is literal, as in fnmatch
                j += 1
            while j < n and segment[j] != "]":
                j += 1
            if j >= n:
                raise GlobError(f"unbalanced '[' at position {i - 1} in {segment!r}")
            body = segment[i:j]
            i = j + 1
            # ``[^x]`` negates as in bash and regex (fnmatch would read a literal '^', which no
            # parameter name holds: the pattern would silently select the opposite of what was meant)
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            if body.startswith("]"):
                body = "\\" + body
            cls = f"[{'^' if negate else ''}{body}]"
            try:
                re.compile(cls)
            except re.error as exc:
                raise GlobError(f"invalid character class in {segment!r}: {exc}") from None
            out.append(f"(?![.]){cls}")
        else:
            out.append(re.escape(c))
    return "".join(out)


def glob_to_regex(pattern: str) -> str:
    if not pattern:
        raise GlobError("empty pattern")
    parts: list[str] = []
    for index, segment in enumerate(pattern.split(".")):
        if not segment:
            raise GlobError(f"empty segment at position {index} (two dots, or a leading or trailing dot)")
        if segment == "**":
            if parts and parts[-1] == "(?:\\.[^.]+)*":
                continue  # ** ** is the same as **
            parts.append("(?:\\.[^.]+)*")
        else:
            parts.append("\\." + _translate_segment(segment))
    return "".join(parts) + "(?:\\..*)?"


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a name glob; the result's ``fullmatch`` takes ``"." + name``."""
    return re.compile(glob_to_regex(pattern), re.DOTALL)


class NameMatcher:
    """All the globs of one selector, compiled into a single alternation."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.compiled = tuple(compile_glob(p) for p in self.patterns)
        self._any = re.compile("|".join(f"(?:{c.pattern})" for c in self.compiled), re.DOTALL)

    def matches(self, name: str) -> bool:
        return self._any.fullmatch("." + name) is not None

    def which(self, name: str) -> list[int]:
        """Indices of the globs that match ``name`` (for per-value diagnostics)."""
        dotted = "." + name
        return [i for i, c in enumerate(self.compiled) if c.fullmatch(dotted)]


class RegexMatcher:
    """Python regular expressions that must match the whole name (``re.fullmatch``)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.compiled = tuple(re.compile(p) for p in self.patterns)

    def matches(self, name: str) -> bool:
        return any(c.fullmatch(name) for c in self.compiled)

    def which(self, name: str) -> list[int]:
        return [i for i, c in enumerate(self.compiled) if c.fullmatch(name)]


def leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def owner(name: str) -> str:
    """The module path a parameter belongs to ("" for the root's own parameters)."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def containing_modules(name: str) -> list[str]:
    """Every module that contains ``name``, root ("") first: ``a.b.w`` -> ["", "a", "a.b"]."""
    parts = name.split(".")
    return [""] + [".".join(parts[:k]) for k in range(1, len(parts))]
