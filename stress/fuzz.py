"""Property fuzzing of the spec parser, the selection engine and the readers (hypothesis), and the
differential conformance check against torch's own loader (``stress.differential``).

The properties are plain functions; ``tests/adversarial`` and ``tests/conformance`` run them briefly in
CI, ``make fuzz`` runs them long:

    python -m stress.fuzz [--examples N] [--mutants M]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stress.mutate import KINDS, Mutation, apply

# -- strategies ---------------------------------------------------------------------------------------------
_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)

_words = st.sampled_from(
    [
        "embed",
        "body",
        "body.0",
        "head",
        "scale",
        "0",
        "1",
        "10",
        "**",
        "*",
        "?",
        "[0-5]",
        "[",
        "]",
        "[!a]",
        "body.*",
        "**.weight",
        "weight",
        "bias",
        "Linear",
        "torch.nn.Linear",
        "BatchNorm1d",
        "",
        ".",
        "..",
        "\x00",
        "é",
        "a" * 300,
        "(",
        "^.*$",
        "(?P<x>",
        "\\",
        "*" * 50,
    ]
)
_pattern = _words | st.text(max_size=12)
_selector = st.one_of(
    st.tuples(st.just("names"), st.lists(_pattern, max_size=3) | json_values),
    st.tuples(st.just("regex"), st.lists(_pattern, max_size=3) | json_values),
    st.tuples(st.just("types"), st.lists(_pattern, max_size=3)),
    st.tuples(st.just("params"), st.lists(_pattern, max_size=3)),
    st.tuples(st.just("until"), _pattern | json_values),
    st.tuples(
        st.just("children"),
        st.fixed_dictionaries(
            {},
            optional={
                "of": _pattern,
                "start": st.integers(-20, 20) | json_values,
                "stop": st.integers(-20, 20) | st.none(),
                "indices": st.lists(st.integers(-20, 20)),
            },
        ),
    ),
    st.tuples(st.text(max_size=8), json_values),
)
_rule = st.builds(
    lambda action, sels: {"action": action, **dict(sels)},
    st.sampled_from(["freeze", "unfreeze", "Freeze", "", 1]),
    st.lists(_selector, max_size=3),
)
spec_shaped = st.fixed_dictionaries(
    {}, optional={"rules": st.lists(_rule, max_size=4) | json_values, "strict": st.booleans() | json_values}
) | st.fixed_dictionaries({"rules": st.lists(_rule, min_size=1, max_size=4), "strict": st.just(False)})
spec_inputs = (
    json_values | spec_shaped | spec_shaped.map(json.dumps) | st.binary(max_size=64) | st.text(max_size=64)
)

mutations = st.builds(
    Mutation,
    kind=st.sampled_from(KINDS),
    region=st.sampled_from(
        [
            "file",
            "pickle:data.pkl",
            "pickle:constants.pkl",
            "pickle:legacy",
            "central directory",
            "local headers",
            "end record",
            "length",
            "st header",
        ]
    ),
    at=st.floats(0, 1),
    data=st.binary(min_size=1, max_size=16)
    | st.sampled_from(
        [
            b"\xff",
            b"\x80",
            b"(",
            b"R",
            b"c",
            b"\x93",
            b"}",
            b"]",
            b"\xff\xff\xff\x7f",
            b'"',
            b"{",
            b"PK\x05\x06",
        ]
    ),
    length=st.integers(1, 64),
)


# -- properties ---------------------------------------------------------------------------------------------
def check_spec(value: Any) -> None:
    """parse_spec gives a FreezeSpec or a SpecError with well-formed issues, nothing else."""
    from layerfreeze.core.spec import FreezeSpec, parse_spec
    from layerfreeze.errors import SpecError

    try:
        spec = parse_spec(value)
    except SpecError as exc:
        assert exc.issues, "a SpecError must say what is wrong"
        for issue in exc.issues:
            assert issue.pointer == "" or issue.pointer.startswith("/"), issue
            assert issue.message
        return
    assert isinstance(spec, FreezeSpec)


def check_spec_on_model(value: Any, checkpoint: Path) -> None:
    """Any spec against a real model: a report or a SpecError; every parameter's state accounted for."""
    from layerfreeze.errors import SpecError
    from layerfreeze.freeze import freeze_file

    try:
        report = freeze_file(checkpoint, value)
    except SpecError as exc:
        assert exc.issues
        return
    doc = report.model_dump(mode="json")
    params = doc["parameters"]
    assert doc["summary"]["parameters"] == len(params)
    assert doc["summary"]["frozen"] == sum(not p["requires_grad"] for p in params)


def check_reader(source: Path, mutation: Mutation, work: Path) -> str:
    """A mutated real checkpoint is read (and then written) or refused with FormatError/LimitExceeded."""
    from layerfreeze.errors import FormatError, LimitExceeded
    from layerfreeze.formats.detect import open_archive
    from layerfreeze.freeze import freeze_file

    path = work / "mutant"
    path.write_bytes(apply(source.read_bytes(), mutation))
    try:
        open_archive(path)
    except (FormatError, LimitExceeded):
        return "refused"
    dst = work / "mutant.out"
    dst.unlink(missing_ok=True)
    try:
        freeze_file(path, {}, dst)
    except (FormatError, LimitExceeded):
        assert not dst.exists(), "a refused write left its output behind"
        return "refused at write"
    return "read"


def _reader_property(source: Path, work: Path, seen: Counter[str]) -> Any:
    def prop(m: Mutation) -> None:
        seen[check_reader(source, m, work)] += 1

    return prop


# -- long run -----------------------------------------------------------------------------------------------
def run(examples: int, deadline_ms: int = 5000) -> list[tuple[str, int, float, str]]:
    """Each property with ``examples`` examples; returns (property, examples, seconds, result)."""
    from stress.mutate import base_files

    cfg = settings(
        max_examples=examples,
        deadline=deadline_ms,
        derandomize=False,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    results: list[tuple[str, int, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="lf-fuzz-") as tmp:
        work = Path(tmp)
        bases = base_files(work / "bases")
        props: dict[str, Any] = {
            "spec parser": given(spec_inputs)(check_spec),
            "spec on a model": given(spec_inputs)(lambda v: check_spec_on_model(v, bases["module"])),
        }
        seen: dict[str, Counter[str]] = {}
        for fmt, path in bases.items():
            seen[f"reader {fmt}"] = Counter()
            props[f"reader {fmt}"] = given(mutations)(_reader_property(path, work, seen[f"reader {fmt}"]))
        for name, prop in props.items():
            t0 = time.perf_counter()
            try:
                cfg(prop)()
                result = "ok"
                if name in seen:
                    result += " (" + ", ".join(f"{k} {v}" for k, v in sorted(seen[name].items())) + ")"
            except Exception as exc:  # the falsifying example is in the message
                result = f"FAIL {type(exc).__name__}: {str(exc)[:400]}"
            results.append((name, examples, time.perf_counter() - t0, result))
            print(f"{name:28s} {examples:6d} examples {results[-1][2]:7.1f}s  {result}", flush=True)
    return results


def run_differential(mutants: int, seed: int = 0) -> Any:
    """The differential conformance property on ``mutants`` mutants; returns its Figures."""
    from stress.differential import run as differential

    with tempfile.TemporaryDirectory(prefix="lf-diff-") as tmp:
        return differential(mutants, seed, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.fuzz")
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--mutants", type=int, default=0, help="differential mutants (0: skip)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the differential mutants")
    args = ap.parse_args(argv)
    from stress import ensure_paths

    ensure_paths()
    ok = True
    if args.mutants:
        fig = run_differential(args.mutants, args.seed)
        for what, figure in fig.rows():
            print(f"differential {what:38s} {figure}", flush=True)
        for d in fig.disagreements[:50]:
            print("DISAGREEMENT", d)
        ok = not fig.disagreements
    results = run(args.examples) if args.examples else []
    return 0 if ok and all(r[3].startswith("ok") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
