from __future__ import annotations

import fnmatch
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layerfreeze.core.patterns import GlobError, NameMatcher, compile_glob


def selects(pattern: str, name: str) -> bool:
    return NameMatcher([pattern]).matches(name)


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("0", "0.weight", True),
    ("0", "10.weight", False),
    ("0", "1.0.weight", False),
    ("encoder.layer.1", "encoder.layer.1.attention.weight", True),
    ("encoder.layer.1", "encoder.layer.10.attention.weight", False),
    ("head", "head.weight", True),
    ("head", "decode_head.weight", False),
    ("heads.decode_head", "heads.decode_head.bias", True),
    ("encoder.layer.[0-5]", "encoder.layer.5.output.dense.weight", True),
    ("encoder.layer.[0-5]", "encoder.layer.6.output.dense.weight", False),
    ("encoder.layer.[0-5]", "encoder.layer.15.output.dense.weight", False),
    ("encoder.layer.[!0]", "encoder.layer.1.w", True),
    ("encoder.layer.[!0]", "encoder.layer.0.w", False),
    ("encoder.*.1", "encoder.layer.1.w", True),
    ("encoder.*", "encoder.w", True),
    ("*.weight", "a.b.weight", False),
    ("**.weight", "a.b.weight", True),
    ("**.weight", "weight", True),
    ("**", "anything.at.all", True),
    ("a.**.w", "a.w", True),
    ("a.**.w", "a.x.y.w", True),
    ("a.**.w", "a.x.y.v", False),
    ("layer?", "layer1.w", True),
    ("layer?", "layer12.w", False),
    ("lay*", "layer12.w", True),
    ("*", "x.y", True),
    ("a.b.c", "a.b", False),
    ("h.weight", "h.weight", True),
    ("h.weight", "h.weight_g", False),
])
def test_examples(pattern, name, expected):
    assert selects(pattern, name) is expected


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "enc.[0-5", "[5-0]", "x[!"])
def test_malformed_globs(bad):
    with pytest.raises(GlobError):
        compile_glob(bad)


def reference(pattern: str, name: str) -> bool:
    """Segment-by-segment matcher built on fnmatch; selects when the pattern matches a dotted prefix."""
    pat = pattern.split(".")
    segs = name.split(".")

    def match(i: int, j: int) -> bool:  # pat[i:] against segs[j:k] for some k: any prefix counts
        if i == len(pat):
            return True
        if pat[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(segs) + 1))
        return j < len(segs) and fnmatch.fnmatchcase(segs[j], pat[i]) and match(i + 1, j + 1)

    return match(0, 0)


segment_chars = st.sampled_from(list("ab01"))
name_segment = st.text(segment_chars, min_size=1, max_size=3)
names = st.lists(name_segment, min_size=1, max_size=5).map(".".join)
glob_segment = st.one_of(
    name_segment,
    st.just("*"), st.just("**"), st.just("?"), st.just("[0-1]"), st.just("[!a]"), st.just("a*"),
    st.just("*1"), st.just("?b"), st.just("[ab]?"),
)
globs = st.lists(glob_segment, min_size=1, max_size=4).map(".".join)


@settings(max_examples=600, deadline=None)
@given(globs, names)
def test_matches_the_reference(pattern, name):
    assert selects(pattern, name) is reference(pattern, name)


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(list("ab.*?[]!-0")), min_size=1, max_size=8), names)
def test_arbitrary_text_either_compiles_and_agrees_or_is_rejected(pattern, name):
    try:
        matcher = NameMatcher([pattern])
    except GlobError:
        return
    assert matcher.matches(name) is reference(pattern, name)


def test_many_patterns_over_100k_names_is_fast():
    names = [f"encoder.layer.{i}.block.{j}.weight" for i in range(1000) for j in range(100)]
    matcher = NameMatcher(["encoder.layer.[0-5]", "**.block.1?", "decoder", "encoder.layer.99*.block.*"])
    regex = re.compile(r"encoder\.layer\.7\d\..*")
    start = time.perf_counter()
    hits = sum(matcher.matches(n) or regex.fullmatch(n) is not None for n in names)
    elapsed = time.perf_counter() - start
    expected = sum(
        (i <= 5) or (10 <= j <= 19) or (i == 99 or 990 <= i <= 999) or (70 <= i <= 79)
        for i in range(1000) for j in range(100)
    )
    assert hits == expected
    assert elapsed < 3.0
