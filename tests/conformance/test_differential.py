"""The differential property on a fast, deterministic slice (``make fuzz`` runs thousands): for every
mutant both our reader and torch accept, every tensor's name, dtype, shape and requires_grad agree, in
the input and in our output after a freeze."""

from __future__ import annotations

from pathlib import Path

from stress.differential import disagreement, run


def test_fast_slice_has_no_disagreement(tmp_path: Path) -> None:
    fig = run(300, seed=0, work=tmp_path)
    assert fig.made == 300
    assert not fig.disagreements, "\n".join(fig.disagreements)
    # the slice is only worth something if many mutants reach the comparison, on both sides of a freeze
    assert fig.accepted_both >= 60 and fig.outputs_compared >= 50, fig.rows()
    assert fig.slowest_refusal[0] < 1.0, fig.slowest_refusal


def test_the_comparison_sees_each_kind_of_difference() -> None:
    ours = {"w": ["float32", [2], True, "parameter"], "b": ["int64", [], None, "buffer"]}
    assert disagreement(ours, {"w": ["float32", [2], True, "parameter"], "b": ["int64", [], False, "buffer"]},
                        types_known=True) == ""
    assert "names" in disagreement(ours, {"w": ["float32", [2], True, "parameter"]}, types_known=True)
    assert "float16" in disagreement(ours, {"w": ["float16", [2], True, "parameter"],
                                            "b": ["int64", [], False, "buffer"]}, types_known=True)
    assert "requires_grad" in disagreement(ours, {"w": ["float32", [2], False, "parameter"],
                                                  "b": ["int64", [], False, "buffer"]}, types_known=True)
    assert "buffer" in disagreement(ours, {"w": ["float32", [2], True, "buffer"],
                                           "b": ["int64", [], False, "buffer"]}, types_known=True)
    not_recorded = {"w": ["float32", [2], None, "parameter"]}
    assert disagreement(not_recorded, {"w": ["float32", [2], False, "tensor"]}, types_known=False) == ""
    assert disagreement(not_recorded, {"w": ["float32", [2], True, "tensor"]}, types_known=False)
