"""The live-module inventories the core tests use are what the real readers build from saved files."""

from __future__ import annotations

import pytest
from fixtures.live import live_inventory
from fixtures.models import MODELS, build, save
from layerfreeze.formats.detect import open_archive


def parameters(inv, with_aliases=True):
    return [(t.name, t.shape, t.dtype, t.requires_grad, t.aliases if with_aliases else ())
            for t in inv.tensors if t.kind == "parameter"]


def buffers(inv):
    return {(t.name, t.shape, t.dtype, t.requires_grad) for t in inv.tensors if t.kind == "buffer"}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", ["module", "state_dict", "safetensors"])
def test_live_inventory_matches_the_reader(tmp_path, name, kind):
    model = build(name)
    real = open_archive(save(model, tmp_path / f"{name}.{kind}", kind)).inventory
    live = live_inventory(model, kind)
    assert (real.format, real.types_known, real.children_exact) == (
        live.format, live.types_known, live.children_exact)
    assert buffers(real) == buffers(live)
    if kind == "safetensors":  # sorted by dtype and name; tied weights keep one name
        assert {p[:4] for p in parameters(real, False)} <= {p[:4] for p in parameters(live, False)}
        assert {m.path for m in real.modules} <= {m.path for m in live.modules}
    else:
        assert parameters(real) == parameters(live)
        assert [(m.path, m.type, m.children) for m in real.modules] == [
            (m.path, m.type, m.children) for m in live.modules]
