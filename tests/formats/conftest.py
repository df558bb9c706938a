from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.models import EXAMPLE_INPUTS, MODELS, build, tiny_bert, tiny_gpt2
from torch import nn


def _zoo() -> dict[str, Callable[[], nn.Module | None]]:
    zoo: dict[str, Callable[[], nn.Module | None]] = {name: (lambda n=name: build(n)) for name in MODELS}
    zoo["bert"] = tiny_bert
    zoo["gpt2"] = tiny_gpt2
    return zoo


ZOO = _zoo()


def make_model(name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ZOO[name]()
    if model is None:
        pytest.skip("transformers is not importable")
    return model


def example_for(name: str):  # type: ignore[no-untyped-def]
    return EXAMPLE_INPUTS[name]() if name in EXAMPLE_INPUTS else None


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
