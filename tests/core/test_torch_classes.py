from __future__ import annotations

import pytest
from layerfreeze.core.matchers import type_matches
from layerfreeze.core.torch_classes import BASES, MODULE, ancestors
from torch import nn

from core.torch_nn_classes import direct_bases, qualified, torch_nn_classes

CLASSES = torch_nn_classes()


def test_table_lists_every_torch_nn_class_with_its_bases():
    assert set(BASES) == set(CLASSES)
    for name, cls in CLASSES.items():
        expected = tuple(b for b in direct_bases(cls) if b != MODULE)
        assert BASES[name] == expected, name


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_ancestors_follow_the_real_mro(name):
    cls = CLASSES[name]
    real = {qualified(c) for c in cls.__mro__ if isinstance(c, type) and issubclass(c, nn.Module)}
    assert set(ancestors(name)) == real
    for other, other_cls in CLASSES.items():
        short = other.rsplit(".", 1)[1]
        assert type_matches(other, name) is issubclass(cls, other_cls), (name, other)
        if short != "Module" and sum(k.endswith("." + short) for k in CLASSES) == 1:
            assert type_matches(short, name) is issubclass(cls, other_cls), (name, short)


def test_user_spellings():
    linear = "torch.nn.modules.linear.Linear"
    assert type_matches("Linear", linear)
    assert type_matches("torch.nn.Linear", linear)
    assert type_matches("nn.Linear", linear)
    assert type_matches(linear, linear)
    assert not type_matches("Bilinear", linear)
    assert not type_matches("linear", linear)
    mha_proj = "torch.nn.modules.linear.NonDynamicallyQuantizableLinear"
    assert type_matches("Linear", mha_proj)
    assert type_matches("_BatchNorm", "torch.nn.modules.batchnorm.BatchNorm2d")
    assert not type_matches("BatchNorm1d", "torch.nn.modules.batchnorm.BatchNorm2d")


def test_classes_outside_torch_nn_match_by_their_own_name_and_as_modules():
    bert = "transformers.models.bert.modeling_bert.BertLayer"
    assert type_matches("BertLayer", bert)
    assert type_matches(bert, bert)
    assert type_matches("Module", bert)
    assert not type_matches("Linear", bert)
