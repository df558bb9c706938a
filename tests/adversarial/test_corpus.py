"""Every hostile file is refused cleanly and quickly, and no payload ever runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from adversarial._support import require
from stress.corpus import Case, run_controls
from stress.refusal import refuse_in_process, refuse_over_http


def test_corpus_covers_the_brief(corpus: list[Case]) -> None:
    groups = {c.group for c in corpus}
    assert {
        "raw pickle",
        "torch zip",
        "legacy .pt",
        "torchscript zip",
        "zip trick",
        "zip bomb",
        "safetensors header",
        "polyglot",
        "odd extension",
        "torch.save",
    } <= groups
    assert len({c.name for c in corpus}) == len(corpus)
    assert len({c.marker for c in corpus if c.marker}) == sum(1 for c in corpus if c.marker)


def test_every_payload_is_live(corpus: list[Case], subprocess_env: dict[str, str]) -> None:
    """Positive control: a real unpickler (pickle.loads / torch.load(weights_only=False)) in a child
    process runs each payload and its marker appears. Otherwise 'no marker' would prove nothing."""
    n, dead = run_controls(corpus, env=subprocess_env)
    assert n >= 190
    assert not dead, [c.name for c in dead]
    assert not any(c.marker.exists() for c in corpus if c.marker)


def test_readers_refuse_every_case(corpus: list[Case], tmp_path: Path) -> None:
    require("layerfreeze.formats.detect", "layerfreeze.freeze")
    tally = refuse_in_process(corpus, tmp_path)
    print(tally.summary())
    bad = [f"{o.case}: {o.detail} ({o.seconds:.2f}s)" for o in tally.failures(max_seconds=1.0)]
    assert tally.ran == 0
    assert not bad, "\n".join(bad)


@pytest.mark.server
def test_service_refuses_every_case(corpus: list[Case], service) -> None:  # type: ignore[no-untyped-def]
    tally = refuse_over_http(corpus, service.url)
    print(tally.summary())
    bad = [f"{o.case}: {o.detail} ({o.seconds:.2f}s)" for o in tally.failures(max_seconds=1.0)]
    assert tally.ran == 0
    assert not bad, "\n".join(bad)
    assert service.alive()
