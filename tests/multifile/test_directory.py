"""A sharded Hugging Face model directory frozen as one model, through the core and the local CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from layerfreeze.cli.main import main
from layerfreeze.errors import FormatError
from layerfreeze.freeze import freeze_directory
from layerfreeze_client import apply

from multifile.hf import model_class, save_sharded, tiny_model

KINDS = ["bert", "gpt2", "llama"]
FORMATS = ["safetensors", "bin"]
SPECS: dict[str, dict[str, dict[str, Any]]] = {
    "names": {"bert": {"names": ["embeddings", "encoder.layer.0"]}, "gpt2": {"names": ["wte", "wpe", "h.0"]},
              "llama": {"names": ["embed_tokens", "layers.0"]}},
    "regex": {"bert": {"regex": [r"encoder\.layer\.[12]\..*\.weight"]},
              "gpt2": {"regex": [r"h\.\d\.attn\..*"]},
              "llama": {"regex": [r"layers\.[12]\.self_attn\..*"]}},
    "params": {"bert": {"params": ["bias"]}, "gpt2": {"params": ["weight"]},
               "llama": {"params": ["weight"], "names": ["layers.1"]}},
    "children": {"bert": {"children": {"of": "encoder.layer", "start": 0, "stop": 2}},
                 "gpt2": {"children": {"of": "h", "start": 1, "stop": 3}},
                 "llama": {"children": {"of": "layers", "indices": [0, 2]}}},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for kind in KINDS:
        model = tiny_model(kind)
        for fmt in FORMATS:
            out[kind, fmt] = save_sharded(model, root / f"{kind}-{fmt}", fmt)
    return out


def shard_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every shard, read without transformers (requires_grad as the .bin records it)."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(directory.iterdir()):
        if f.suffix == ".safetensors":
            tensors.update(load_file(f))
        elif f.suffix == ".bin":
            tensors.update(torch.load(f, weights_only=True))
    return tensors


def report_states(report: Any) -> dict[str, bool]:
    return {p.name: p.requires_grad for p in report.parameters}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", sorted(SPECS))
def test_freeze_directory_loads_and_applies(models: dict[tuple[str, str], Path], tmp_path: Path,
                                            kind: str, fmt: str, how: str) -> None:
    src = models[kind, fmt]
    assert len([f for f in src.iterdir() if f.suffix in (".bin", ".safetensors")]) >= 3
    spec = {"rules": [{"action": "freeze", **SPECS[how][kind]}]}
    out = tmp_path / "frozen"
    report = freeze_directory(src, spec, out)
    states = report_states(report)
    assert report.summary.frozen > 0 and report.summary.trainable > 0

    # unchanged files byte-identical; every tensor byte-identical; .bin flags are the report's states
    assert (out / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    before, after = shard_tensors(src), shard_tensors(out)
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert tensor.dtype == after[name].dtype
        assert tensor.view(torch.uint8).equal(after[name].view(torch.uint8)), name
        if fmt == "bin" and name in states:
            assert after[name].requires_grad is states[name], name
    changed = {f.path for f in report.files.files if f.changed}
    assert "config.json" not in changed and report.files.index in changed
    assert set(report.files.shard_of) == set(before)

    model = model_class(kind).from_pretrained(out)
    applied = apply(model, out)
    assert applied is not None
    live = {n: p.requires_grad for n, p in model.named_parameters()}
    assert live == states

    # AdamW steps leave the frozen parameters bit-identical
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        ids = torch.randint(0, 64, (2, 8))
        model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        if n in frozen:
            assert p.detach().equal(frozen[n]), n


def test_output_inspected_again_gives_the_same_states(models: dict[tuple[str, str], Path],
                                                      tmp_path: Path) -> None:
    for fmt in FORMATS:
        spec = {"rules": [{"action": "freeze", "names": ["embeddings"]}]}
        report = freeze_directory(models["bert", fmt], spec, tmp_path / fmt)
        again = freeze_directory(tmp_path / fmt, "{}")
        assert report_states(again) == report_states(report)
        index = json.loads((tmp_path / fmt / report.files.index).read_text())
        assert index["metadata"]["layerfreeze"]["spec_sha256"] == report.spec_sha256


def broken_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def index_of(directory: Path) -> tuple[Path, dict[str, Any]]:
    path = next(directory.glob("*.index.json"))
    return path, json.loads(path.read_text())


@pytest.mark.parametrize("fmt", FORMATS)
def test_index_and_shards_must_agree(models: dict[tuple[str, str], Path], tmp_path: Path, fmt: str) -> None:
    src = models["bert", fmt]

    # an index naming a missing shard
    d = broken_copy(src, tmp_path / "missing")
    path, doc = index_of(d)
    first = next(iter(doc["weight_map"]))
    doc["weight_map"][first] = "nowhere.bin"
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"nowhere\.bin.*not in the model"):
        freeze_directory(d, "{}")

    # a shard holding a key the index does not list
    d = broken_copy(src, tmp_path / "extra")
    path, doc = index_of(d)
    del doc["weight_map"][first]
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=f"holds '{first}', which .* does not list"):
        freeze_directory(d, "{}")

    # a key in its shard but the index says another shard
    d = broken_copy(src, tmp_path / "moved")
    path, doc = index_of(d)
    shards = sorted(set(doc["weight_map"].values()))
    doc["weight_map"][first] = next(s for s in shards if s != doc["weight_map"][first])
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=f"maps '{first}' to .*, but it is in"):
        freeze_directory(d, "{}")

    # two shards holding the same key
    d = broken_copy(src, tmp_path / "twice")
    path, doc = index_of(d)
    holder, other = doc["weight_map"][first], next(s for s in shards if s != doc["weight_map"][first])
    tensors = shard_tensors(d)
    if fmt == "bin":
        extra = torch.load(d / other, weights_only=True)
        extra[first] = tensors[first]
        torch.save(extra, d / other)
    else:
        from safetensors.torch import load_file, save_file

        extra = load_file(d / other)
        extra[first] = tensors[first].clone()
        save_file(extra, d / other, metadata={"format": "pt"})
    with pytest.raises(FormatError, match=f"'{first}' is held by two shards"):
        freeze_directory(d, "{}")
    assert holder != other

    # an index naming a shard outside the directory: looked up among the model's files, never opened
    d = broken_copy(src, tmp_path / "outside")
    path, doc = index_of(d)
    doc["weight_map"][first] = "../" + src.name + "/" + doc["weight_map"][first]
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"not in the model"):
        freeze_directory(d, "{}")

    # a shard that is not a checkpoint: the reader's error, naming the shard
    d = broken_copy(src, tmp_path / "garbage")
    (d / other).write_bytes(b"not a checkpoint at all")
    with pytest.raises(FormatError, match=f"^{re.escape(other)}: "):
        freeze_directory(d, "{}")

    # no index at all
    d = broken_copy(src, tmp_path / "noindex")
    index_of(d)[0].unlink()
    with pytest.raises(FormatError, match="no index"):
        freeze_directory(d, "{}")


def test_cli_freeze_and_inspect_a_directory(models: dict[tuple[str, str], Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = models["gpt2", "bin"]
    out = tmp_path / "frozen"
    spec = json.dumps({"rules": [{"action": "freeze", "names": ["wte", "h.0"]}]})
    assert main(["freeze", str(src), "--spec-json", spec, "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"]["filename"] == "frozen"
    assert "pytorch_model.bin.index.json" in {f["path"] for f in report["files"]["files"] if f["changed"]}
    assert main(["inspect", str(out), "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert {p["name"]: p["requires_grad"] for p in inspected["parameters"]} == {
        p["name"]: p["requires_grad"] for p in report["parameters"]}
    assert main(["inspect", str(out)]) == 0
    assert "5 shards named by pytorch_model.bin.index.json" in capsys.readouterr().out
    # refuses to write into a non-empty directory, and names the disagreement of a broken index
    assert main(["freeze", str(src), "--spec-json", spec, "-o", str(out)]) != 0
    assert "not empty" in capsys.readouterr().err
    broken = broken_copy(src, tmp_path / "broken")
    next(broken.glob("pytorch_model-00002-*.bin")).unlink()
    assert main(["inspect", str(broken)]) == 4
    assert "not in the model" in capsys.readouterr().err


def test_unsharded_directory_and_both_forms_side_by_side(models: dict[tuple[str, str], Path],
                                                         tmp_path: Path) -> None:
    """An unsharded save_pretrained directory (model.safetensors, no index) is one model too; a directory
    holding both a safetensors and a .bin set (common on the Hub) freezes both the same way."""
    model = tiny_model("bert")
    single = tmp_path / "single"
    model.save_pretrained(single)
    assert (single / "model.safetensors").is_file() and not list(single.glob("*.index.json"))
    spec = {"rules": [{"action": "freeze", "names": ["embeddings"]}]}
    report = freeze_directory(single, spec, tmp_path / "single-frozen")
    assert report.files.index is None
    loaded = model_class("bert").from_pretrained(tmp_path / "single-frozen")
    apply(loaded, tmp_path / "single-frozen")
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == report_states(report)

    both = broken_copy(models["bert", "safetensors"], tmp_path / "both")
    for f in models["bert", "bin"].glob("pytorch_model*"):
        shutil.copy(f, both / f.name)
    report = freeze_directory(both, spec, tmp_path / "both-frozen")
    assert report.files.index == "model.safetensors.index.json"
    changed = {f.path for f in report.files.files if f.changed}
    assert "pytorch_model.bin.index.json" in changed and any(p.endswith(".bin") for p in changed)
    bin_only = tmp_path / "bin-only"
    bin_only.mkdir()
    for f in (tmp_path / "both-frozen").glob("pytorch_model*"):
        shutil.copy(f, bin_only / f.name)
    assert report_states(freeze_directory(bin_only, "{}")) == report_states(report)
    assert apply(model_class("bert").from_pretrained(tmp_path / "both-frozen"), bin_only) is not None


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.bin", "a/../../x", "a//b", "./config.json", "a\\b",
                                 "", "a/", "CONFIG.JSON", "config.json/x", "tab\there"])
def test_unsafe_relative_paths_are_refused(models: dict[tuple[str, str], Path], bad: str) -> None:
    src = models["bert", "safetensors"]
    files = {f.name: f for f in src.iterdir()}
    files[bad] = src / "config.json"
    with pytest.raises(FormatError, match=r"relative path|same file|both a file and a folder") as err:
        freeze_directory(files, "{}")
    assert repr(bad)[1:-1][:20] in str(err.value)


def test_cli_patch_of_a_directory_rebuilds_the_frozen_directory(
        models: dict[tuple[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in FORMATS:
        src = models["llama", fmt]
        spec = json.dumps({"rules": [{"action": "freeze", "names": ["layers.0", "embed_tokens"]}]})
        patch = tmp_path / f"{fmt}.patch.json"
        assert main(["patch", "create", str(src), "--spec-json", spec, "-o", str(patch)]) == 0
        doc = json.loads(patch.read_text())
        assert sorted(e["path"] for e in doc["files"]) == sorted(p.name for p in src.iterdir())
        config = next(e for e in doc["files"] if e["path"] == "config.json")
        assert config["segments"] == [{"base": [0, (src / "config.json").stat().st_size]}]
        assert len(patch.read_bytes()) < 64_000  # the deltas: headers and flag bytes, never tensor data
        rebuilt, frozen = tmp_path / f"{fmt}-rebuilt", tmp_path / f"{fmt}-frozen"
        assert main(["patch", "apply", str(patch), str(src), "-o", str(rebuilt)]) == 0
        freeze_directory(src, spec, frozen)
        for f in frozen.iterdir():
            assert (rebuilt / f.name).read_bytes() == f.read_bytes(), f.name
        # a base that is not the patch's is refused, and nothing is left behind
        tampered = broken_copy(src, tmp_path / f"{fmt}-tampered")
        (tampered / "config.json").write_bytes((src / "config.json").read_bytes()[:-1] + b"x")  # same size
        assert main(["patch", "apply", str(patch), str(tampered), "-o", str(tmp_path / "nope")]) == 4
        assert "not the patch's base" in capsys.readouterr().err
        assert not (tmp_path / "nope").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_patched_files_and_directories_follow_the_umask_like_cp(
        models: dict[tuple[str, str], Path], tmp_path: Path) -> None:
    """What `layerfreeze patch apply` writes, a file or a directory, gets the modes `cp` would give."""
    import stat

    from testing.files import umask

    src = models["llama", "safetensors"]
    spec = json.dumps({"rules": [{"action": "freeze", "names": ["layers.0"]}]})
    patch, one_patch = tmp_path / "dir.patch.json", tmp_path / "one.patch.json"
    shard = next(p for p in src.iterdir() if p.suffix == ".safetensors")
    assert main(["patch", "create", str(src), "--spec-json", spec, "-o", str(patch)]) == 0
    relaxed = json.dumps({"rules": [{"action": "freeze", "names": ["**"]}], "strict": False})
    assert main(["patch", "create", str(shard), "--spec-json", relaxed, "-o", str(one_patch)]) == 0
    with umask(0o027):
        assert main(["patch", "apply", str(patch), str(src), "-o", str(tmp_path / "out")]) == 0
        one = tmp_path / "one.safetensors"
        assert main(["patch", "apply", str(one_patch), str(shard), "-o", str(one)]) == 0
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()} == {0o640}
    assert stat.S_IMODE((tmp_path / "one.safetensors").stat().st_mode) == 0o640
