"""A model directory's stored description plans exactly what reading its shards again plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from layerfreeze.core.spec import parse_spec
from layerfreeze.errors import FormatError
from layerfreeze.formats.sharded import ShardedModel, files_of_directory
from layerfreeze.freeze import plan_directory

from multifile.test_directory import FORMATS, KINDS, SPECS, models  # noqa: F401  (module fixture)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_stored_description_plans_the_same_bytes(models: dict[tuple[str, str], Path],  # noqa: F811
                                                 kind: str, fmt: str) -> None:
    files = files_of_directory(models[kind, fmt])
    read = ShardedModel(files)
    described = read.describe()
    assert described is not None
    described = json.loads(json.dumps(described))  # stored as JSON
    for how in sorted(SPECS):
        spec = parse_spec({"rules": [{"action": "freeze", **SPECS[how][kind]}]})
        model_a, selection_a, plans_a = plan_directory(files, spec)
        model_b, selection_b, plans_b = plan_directory(files, spec, description=described)
        assert plans_b == plans_a, how
        assert selection_b.final_by_name() == selection_a.final_by_name(), how
        assert model_b.inventory == model_a.inventory and model_b.unrecordable == model_a.unrecordable
        assert model_b.shard_of == model_a.shard_of and model_b.index == model_a.index


def test_a_description_of_other_files_is_refused(models: dict[tuple[str, str], Path]) -> None:  # noqa: F811
    files = files_of_directory(models["gpt2", "bin"])
    described = ShardedModel(files).describe()
    assert described is not None
    shard = next(p for s in described["sets"] for p in s["shards"])
    del files[shard]
    with pytest.raises(FormatError, match="does not fit"):
        ShardedModel.from_description(files, described)
