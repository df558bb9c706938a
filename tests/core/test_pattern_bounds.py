"""Pattern matching is exact and bounded: globs match in linear time (checked against a plain recursive
glob matcher on random cases), regular expressions that backtrack stop at their time budget, and the spec's
size caps refuse oversized specs before compiling anything."""

from __future__ import annotations

import json
import random
import re
import time

import pytest
from layerfreeze.core import patterns
from layerfreeze.core.patterns import BoundedPattern, NameMatcher, RegexMatcher, compile_glob
from layerfreeze.core.spec import (
    MAX_PATTERN_CHARS,
    MAX_PATTERN_TOTAL,
    MAX_REGEXES,
    MAX_RULES,
    MAX_SPEC_BYTES,
    parse_spec,
)
from layerfreeze.errors import LimitExceeded, SpecError


def _segment_matches(glob: str, segment: str) -> bool:
    """fnmatch semantics on one segment, written directly (no atomic groups, no budget)."""
    regex = ""
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            regex += ".*"
        elif c == "?":
            regex += "."
        elif c == "[":
            j = glob.index("]", i + 2 if glob[i + 1] in "!^" else i + 1)
            body = glob[i + 1 : j]
            regex += "[^" + body[1:] + "]" if body[0] in "!^" else "[" + body + "]"
            i = j
        else:
            regex += re.escape(c)
        i += 1
    return re.fullmatch(regex, segment, re.DOTALL) is not None


def _reference(glob: str, name: str) -> bool:
    """The glob matches the name or one of its containing modules, ``**`` spanning any segments."""
    gs, ns = glob.split("."), name.split(".")

    def match(g: int, n: int) -> bool:
        if g == len(gs):
            return n >= 1  # the name itself, or a containing module: what is left are its descendants
        if gs[g] == "**":
            return any(match(g + 1, k) for k in range(n, len(ns) + 1))
        return n < len(ns) and _segment_matches(gs[g], ns[n]) and match(g + 1, n + 1)

    return match(0, 0)


SEGMENTS = ["a", "b", "ab", "ba", "aab", "abb", "0", "10"]
GLOB_SEGMENTS = ["a", "b", "*", "?", "a*", "*b", "*a*", "a*b", "[ab]", "[!a]*", "**", "1*", "?0", "*a*b*"]


def test_globs_match_exactly_as_the_plain_definition_on_random_cases() -> None:
    rng = random.Random(20261203)
    checked = 0
    for _ in range(3000):
        glob = ".".join(rng.choice(GLOB_SEGMENTS) for _ in range(rng.randint(1, 4)))
        name = ".".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 6)))
        assert (compile_glob(glob).fullmatch("." + name) is not None) == _reference(glob, name), (glob, name)
        checked += 1
    assert checked == 3000


def test_a_name_matcher_agrees_with_each_of_its_globs() -> None:
    matcher = NameMatcher(["encoder.**.attention.*", "head"])
    assert matcher.matches("encoder.layer.0.attention.query.weight")
    assert matcher.matches("head.weight")
    assert not matcher.matches("decode_head.weight")
    assert matcher.which("head.bias") == [1]


@pytest.mark.parametrize("glob, name", [
    ("*a" * 30 + "*b", "a" * 5000),  # many stars in one segment, no b: polynomial without atomic groups
    (".".join(["**", "a"] * 12) + ".b", ".".join(["a"] * 3000)),  # many ** against many segments
])
def test_hostile_globs_match_in_linear_time(glob: str, name: str) -> None:
    t0 = time.perf_counter()
    assert compile_glob(glob).fullmatch("." + name) is None
    assert time.perf_counter() - t0 < 0.5


def test_a_backtracking_regex_stops_at_its_budget_with_a_named_error() -> None:
    pattern = BoundedPattern(r"(a|aa)+$", label="regular expression '(a|aa)+$'", budget_s=0.2)
    t0 = time.perf_counter()
    with pytest.raises(LimitExceeded, match=r"\(a\|aa\)\+\$"):
        pattern.fullmatch("a" * 80 + "b")
    assert time.perf_counter() - t0 < 3
    with pytest.raises(LimitExceeded):  # the budget is spent: it does not start again per name
        pattern.fullmatch("a" * 80 + "c")


def test_the_budget_is_summed_over_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patterns, "MATCH_BUDGET_S", 0.05)
    matcher = RegexMatcher([r"(a|aa)+$"])
    with pytest.raises(LimitExceeded):
        for _ in range(100_000):
            matcher.matches("a" * 20 + "b")  # about a millisecond each


def test_ordinary_regexes_keep_python_semantics() -> None:
    matcher = RegexMatcher([r"(?!.*head).*\.weight", r"layer\.\d+\.bias"])
    assert matcher.matches("encoder.weight")
    assert not matcher.matches("head.weight")
    assert matcher.which("layer.10.bias") == [1]
    with pytest.raises(re.error):
        RegexMatcher([r"\p{L}"])  # the regex module would take it; Python's syntax decides


def _spec(**rule: object) -> str:
    return json.dumps({"rules": [{"action": "freeze", **rule}]})


@pytest.mark.parametrize("raw, where", [
    ("{" + " " * MAX_SPEC_BYTES + "}", ""),
    (json.dumps({"rules": [{"action": "freeze", "names": ["a"]}] * (MAX_RULES + 1)}), "/rules"),
    (_spec(names=["a" * (MAX_PATTERN_CHARS + 1)]), "/rules/0/names/0"),
    (_spec(regex=["a" * (MAX_PATTERN_CHARS + 1)]), "/rules/0/regex/0"),
    (_spec(names=["a*" * 500] * (MAX_PATTERN_TOTAL // 1000 + 1)), "/rules"),
    (_spec(regex=[f"r{i}" for i in range(MAX_REGEXES + 1)]), "/rules"),
    (_spec(types=[f"T{i}" for i in range(10_001)]), "/rules"),
])
def test_oversized_specs_are_refused_quickly_naming_the_cap(raw: str, where: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert time.perf_counter() - t0 < 0.5
    assert info.value.issues[0].pointer == where
    assert "limit" in info.value.issues[0].message


def test_the_900_kb_spec_of_300000_segments_costs_nothing() -> None:
    raw = json.dumps({"rules": [{"action": "freeze", "names": [".".join(["a*"] * 300_000)]},
                                {"action": "freeze", "names": ["a.[b"]}]})
    t0 = time.perf_counter()
    with pytest.raises(SpecError):
        parse_spec(raw)
    assert time.perf_counter() - t0 < 0.1


def test_a_spec_at_every_cap_is_read_in_milliseconds() -> None:
    classes = "".join(f"[{chr(97 + i % 20)}-{chr(98 + i % 20 + i // 20 % 5)}]" for i in range(300))
    raw = json.dumps({"rules": [
        {"action": "freeze", "names": [classes[5 * i :][:1020] for i in range(10)]},
        {"action": "freeze", "names": [f"encoder.layer.{i}.weight" for i in range(5000)]},
        {"action": "unfreeze", "regex": [f"(?:a|b{i})" * 20 for i in range(MAX_REGEXES)]},
    ]})
    t0 = time.perf_counter()
    parse_spec(raw)
    assert time.perf_counter() - t0 < 0.5  # measured ~20 ms; generous for a loaded machine
