"""Name patterns, compiled once per spec, matched against dotted parameter names.

A glob is matched **segment by segment**: ``*``, ``?``, ``[0-5]`` and ``[!x]`` (or ``[^x]``) stay inside
one segment, ``**`` spans any number of segments (zero included). A glob selects a name when it matches
the name itself or any of its dotted prefixes (the modules that contain it), so ``0`` selects ``0.weight`` but
never ``10.weight``, and ``head`` never ``decode_head.weight``.

Each glob becomes one regular expression over ``"." + name``: a literal segment ``S`` is ``\\.S``,
``**`` is ``(?:\\.[^.]+)*``, and a trailing ``(?:\\..*)?`` lets it stop at a containing module.

Matching is bounded. Globs are translated so that they cannot backtrack badly (atomic groups, see
``_translate_segment`` and ``glob_to_regex``): their cost is linear in the name. A user's regular
expression can backtrack (``(a+)+$`` takes hours on a 40-character name), so each one is a
:class:`BoundedPattern` that may spend at most ``MATCH_BUDGET_S`` seconds matching, over all its calls;
past that it raises ``LimitExceeded`` (a 422 naming the pattern). The ``regex`` module is used for its
per-call timeout (the standard ``re`` cannot be interrupted from another thread); patterns are checked
with ``re`` first, so the accepted syntax is Python's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

import regex

from layerfreeze.errors import LimitExceeded

_SEGMENT_CHAR = r"[^.]"
_SEGMENT_END = r"(?![^.])"  # a segment pattern always ends where the segment does
_ANY_SEGMENTS = r"(?:\.[^.]+)*"  # ``**``
MATCH_BUDGET_S = 2.0  # matching time per pattern per job, summed over every name it is tried on


class BoundedPattern:
    """A compiled pattern (``pattern``, ``fullmatch``) whose total matching time is capped."""

    __slots__ = ("_budget", "_compiled", "_label", "_left", "pattern")

    def __init__(self, source: str, flags: int = 0, *, label: str, budget_s: float | None = None) -> None:
        re.compile(source, flags)  # Python's syntax, and its error messages, decide what is valid
        self.pattern = source
        self._compiled = regex.compile(source, flags | regex.VERSION0)
        self._left = MATCH_BUDGET_S if budget_s is None else budget_s
        self._budget = self._left
        self._label = label

    def fullmatch(self, text: str) -> object | None:
        started = time.perf_counter()
        try:
            match: object | None = self._compiled.fullmatch(text, timeout=max(self._left, 0.001))
            return match
        except TimeoutError:
            self._left = 0.0
            raise LimitExceeded(
                f"{self._label} took more than {self._budget:g} s to match against this model's names "
                "(a pattern that backtracks, like '(a+)+$'); simplify it", limit="match_budget_s") from None
        finally:
            self._left -= time.perf_counter() - started


class GlobError(ValueError):
    """A malformed glob (unbalanced ``[``, empty segment, bad range)."""


def _translate_segment(segment: str) -> str:
    """fnmatch-style translation of one segment, never crossing a dot, matching the whole segment.

    The pieces between ``*`` are matched at their earliest place, in atomic groups (as ``fnmatch`` does):
    the classic glob argument makes that exact, and it keeps a pattern of many ``*`` from backtracking
    polynomially on a long segment.
    """
    out: list[str] = []
    pieces: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        i += 1
        if c == "*":
            while i < n and segment[i] == "*":
                i += 1
            pieces.append("".join(out))
            out = []
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
    if not pieces:
        return "".join(out) + _SEGMENT_END
    first, *middle = pieces
    return (first + "".join(f"(?>{_SEGMENT_CHAR}*?{p})" for p in middle)
            + f"{_SEGMENT_CHAR}*{''.join(out)}{_SEGMENT_END}")


def glob_to_regex(pattern: str) -> str:
    """The regular expression of a glob, over ``"." + name``.

    The segments between two ``**`` are found at their earliest place, in an atomic group: a glob with
    several ``**`` then matches in time linear in the name's segments instead of a power of it.
    """
    if not pattern:
        raise GlobError("empty pattern")
    head: list[str] = []  # segments before the first **
    runs: list[list[str]] = []  # segments after each **
    for index, segment in enumerate(pattern.split(".")):
        if not segment:
            raise GlobError(f"empty segment at position {index} (two dots, or a leading or trailing dot)")
        if segment == "**":
            if not runs or runs[-1]:
                runs.append([])  # ** ** is the same as **
        else:
            (runs[-1] if runs else head).append("\\." + _translate_segment(segment))
    out = "".join(head)
    for run in runs:
        out += f"(?>{_ANY_SEGMENTS}?{''.join(run)})" if run else _ANY_SEGMENTS
    return out + "(?:\\..*)?"


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

    def select(self, names: Iterable[tuple[str, ...]]) -> list[bool]:
        """Per parameter (its name and its aliases): does any glob match one of them? The loop every
        preview runs over every parameter, so one regex call for a parameter without aliases."""
        full = self._any.fullmatch
        return [full("." + ns[0]) is not None if len(ns) == 1 else any(full("." + n) is not None for n in ns)
                for ns in names]

    def which(self, name: str) -> list[int]:
        """Indices of the globs that match ``name`` (for per-value diagnostics)."""
        dotted = "." + name
        return [i for i, c in enumerate(self.compiled) if c.fullmatch(dotted)]


class RegexMatcher:
    """Python regular expressions that must match the whole name (``re.fullmatch``)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.compiled = tuple(BoundedPattern(p, label=f"regular expression {p!r}") for p in self.patterns)

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
