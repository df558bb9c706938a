"""Bounded property fuzzing (the long run is ``make fuzz``): the spec parser, specs against a real model,
and the readers on mutated real checkpoints. Never an exception outside the contract, never a hang."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from adversarial._support import require
from stress.fuzz import check_reader, check_spec, check_spec_on_model, mutations, spec_inputs
from stress.mutate import Mutation, base_files

CI = settings(max_examples=150, deadline=3000, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return base_files(tmp_path_factory.mktemp("bases"))


@CI
@given(spec_inputs)
def test_spec_parser_gives_a_spec_or_a_spec_error(value: object) -> None:
    require("layerfreeze.core.spec")
    check_spec(value)


def test_spec_on_a_real_model(bases: dict[str, Path]) -> None:
    require("layerfreeze.freeze", "layerfreeze.formats.detect")

    @CI
    @given(spec_inputs)
    def prop(value: object) -> None:
        check_spec_on_model(value, bases["module"])

    prop()


@pytest.mark.parametrize(
    "fmt", ["state_dict", "checkpoint", "module", "torchscript", "safetensors", "legacy"]
)
def test_reader_on_mutated_checkpoints(fmt: str, bases: dict[str, Path], tmp_path: Path) -> None:
    require("layerfreeze.formats.detect", "layerfreeze.freeze")

    @settings(CI, max_examples=80)
    @given(mutations)
    def prop(m: Mutation) -> None:
        check_reader(bases[fmt], m, tmp_path)

    prop()


def test_unmutated_bases_are_read(bases: dict[str, Path], tmp_path: Path) -> None:
    """Control: the fuzzing starts from files the readers accept, so refusals come from the mutations."""
    require("layerfreeze.formats.detect", "layerfreeze.freeze")
    for fmt, path in bases.items():
        assert check_reader(path, Mutation("insert", "file", 1.0, b""), tmp_path) == "read", fmt
