"""Shared fixtures for the attack, fault and load suites: the generated corpus and a live service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adversarial._support import require
from stress.corpus import Case, generate


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="session")
def corpus(corpus_dir: Path) -> list[Case]:
    return generate(corpus_dir / "files", corpus_dir / "markers")


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One service process for the HTTP suites (small upload cap so the over-cap case stays cheap)."""
    require("layerfreeze.server")
    from stress.server import Service

    cap = {"LAYERFREEZE_MAX_UPLOAD_BYTES": str(256 << 20)}
    with Service(tmp_path_factory.mktemp("svc") / "data", cap) as svc:
        svc.warm_up()
        yield svc
