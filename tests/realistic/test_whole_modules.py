"""Whole pickled modules (transformers and torch.nn layers users really have): the report against
``named_parameters()`` and ``isinstance``, the output against torch, and a real AdamW step after apply."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from layerfreeze.errors import UnsafePickleError
from layerfreeze.formats.detect import open_archive
from layerfreeze_client import apply
from torch import nn
from torch.nn.utils import parametrizations

from realistic._check import flags, frozen, run, same_bytes

transformers = pytest.importorskip("transformers")


class OddModule(nn.Module):
    """``register_parameter(name, None)``, a non-persistent buffer, an empty container, a parameter-less
    child between two that have parameters, and a parameter on the module itself."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3, bias=False)
        self.register_parameter("unused", None)
        self.register_buffer("scratch", torch.ones(2), persistent=False)
        self.register_buffer("kept", torch.ones(2))
        self.empty = nn.Sequential()
        self.act = nn.ReLU()
        self.gain = nn.Parameter(torch.ones(3))
        self.tail = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.act(self.lin(x)) * self.gain)


class ParameterContainers(nn.Module):
    """Parameters held directly by ParameterList / ParameterDict, and less common layers."""

    def __init__(self) -> None:
        super().__init__()
        self.pl = nn.ParameterList([nn.Parameter(torch.randn(2)) for _ in range(3)])
        self.pd = nn.ParameterDict({"a": nn.Parameter(torch.randn(2)), "b": nn.Parameter(torch.randn(2))})
        self.bag = nn.EmbeddingBag(5, 2)
        self.bil = nn.Bilinear(2, 2, 2)
        self.prelu = nn.PReLU()


def _tiny(cls: str, cfg: str, **kw: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return getattr(transformers, cls)(getattr(transformers, cfg)(**kw))
    return make


BERT = _tiny("BertModel", "BertConfig", vocab_size=64, hidden_size=16, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
GPT2 = _tiny("GPT2LMHeadModel", "GPT2Config", vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=32,
             bos_token_id=0, eos_token_id=0)
T5 = _tiny("T5ForConditionalGeneration", "T5Config", vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=2,
           num_heads=2, decoder_start_token_id=0)
VIT = _tiny("ViTModel", "ViTConfig", hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, image_size=8, patch_size=4)
LLAMA = _tiny("LlamaForCausalLM", "LlamaConfig", vocab_size=64, hidden_size=16, intermediate_size=32,
              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)


def _seeded(make: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return make()
    return build


def _ids() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, 64, (2, 6))}


# name, builder, types to freeze (class names as a user writes them), the classes for isinstance, inputs
CASES = [
    ("bert", BERT, ["BertEmbeddings", "LayerNorm"], ("BertEmbeddings", nn.LayerNorm), _ids),
    ("gpt2", GPT2, ["Conv1D"], ("Conv1D",), _ids),
    ("t5", T5, ["T5LayerNorm", "T5Attention"], ("T5LayerNorm", "T5Attention"),
     lambda: {**_ids(), "decoder_input_ids": torch.randint(0, 64, (2, 3))}),
    ("vit", VIT, ["ViTEmbeddings"], ("ViTEmbeddings",), lambda: {"pixel_values": torch.randn(2, 3, 8, 8)}),
    ("llama", LLAMA, ["LlamaRMSNorm", "torch.nn.Embedding"], ("LlamaRMSNorm", nn.Embedding), _ids),
    ("mha", _seeded(lambda: nn.Sequential(nn.MultiheadAttention(8, 2))), ["MultiheadAttention"],
     (nn.MultiheadAttention,), None),
    ("transformer", _seeded(lambda: nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1,
                                                   num_decoder_layers=1, dim_feedforward=16)),
     ["TransformerEncoder"], (nn.TransformerEncoder,),
     lambda: {"src": torch.randn(3, 2, 8), "tgt": torch.randn(2, 2, 8)}),
    ("rnns", _seeded(lambda: nn.Sequential(nn.GRU(4, 8, 2, bidirectional=True), nn.RNN(16, 4))), ["GRU"],
     (nn.GRU,), None),
    ("convs", _seeded(lambda: nn.Sequential(
        nn.Conv3d(2, 4, 3), nn.ConvTranspose2d(4, 2, 3), nn.GroupNorm(2, 4),
        nn.InstanceNorm2d(4, affine=True), nn.Embedding(10, 4, padding_idx=0))),
     ["torch.nn.GroupNorm", "nn.InstanceNorm2d"],
     (nn.GroupNorm, nn.InstanceNorm2d), None),
    ("containers", _seeded(ParameterContainers), ["ParameterList", "nn.PReLU"], (nn.ParameterList, nn.PReLU),
     None),
    ("odd", _seeded(OddModule), ["Linear"], (nn.Linear,), lambda: {"x": torch.randn(2, 3)}),
]


def _classic(model: nn.Module, classes: tuple) -> set[str]:
    """The loop users write: isinstance over named_modules, then module.parameters()."""
    def hit(mod: nn.Module) -> bool:
        return any(isinstance(mod, c) if isinstance(c, type) else type(mod).__name__ == c for c in classes)
    ids = {id(p) for mod in model.modules() if hit(mod) for p in mod.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _loss(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**inputs)
    out = out[0] if isinstance(out, tuple) else out
    out = getattr(out, "logits", getattr(out, "last_hidden_state", out))
    return (out.float() ** 2).mean()


@pytest.mark.parametrize(("name", "make", "types", "classes", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_whole_module(tmp_path: Path, name: str, make: Callable[[], nn.Module], types: list[str],
                      classes: tuple, inputs: Callable[[], dict[str, torch.Tensor]] | None) -> None:
    model = make()
    src = tmp_path / f"{name}.pt"
    torch.save(model, src)
    if any(getattr(m, "_kernel_funcs", None) for m in model.modules()):
        # Newer transformers keep hub-kernel rebuilders in their modules: the pickle calls code, which
        # torch's weights_only loader refuses, and so do we, naming the global.
        with pytest.raises(pickle.UnpicklingError):
            torch.load(src, weights_only=True)
        with pytest.raises(UnsafePickleError, match="kernels"):
            open_archive(src)
        return
    report, dst = run(src, {"rules": [{"action": "freeze", "types": types}]}, tmp_path)
    assert report["format"] == "torch.module"
    assert [p["name"] for p in report["parameters"]] == [n for n, _ in model.named_parameters()]
    modules = dict(model.named_modules())
    for p in report["parameters"]:
        recorded = p["module_type"]
        assert recorded is not None and recorded.rsplit(".", 1)[-1] == type(modules[p["module"]]).__name__
    assert {b["name"] for b in report["buffers"]} == set(dict(model.named_buffers()))
    assert frozen(report) == _classic(model, classes)

    out = torch.load(dst, weights_only=False)  # our own test file: the output of a whole-module pickle
    assert {n: p.requires_grad for n, p in out.named_parameters()} == flags(report)
    pairs = zip(model.state_dict(keep_vars=True).items(), out.state_dict(keep_vars=True).items(), strict=True)
    for (k, a), (k2, b) in pairs:
        assert k == k2 and same_bytes(a, b), k

    if inputs is None:
        return
    fresh = make()
    apply(fresh, report)
    before = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    opt = torch.optim.AdamW(fresh.parameters(), lr=0.05, weight_decay=0.1)
    fresh.train()
    for _ in range(2):
        opt.zero_grad()
        _loss(fresh, inputs()).backward()
        opt.step()
    for n, p in fresh.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), f"frozen {n} moved"
    assert any(not torch.equal(p, before[n]) for n, p in fresh.named_parameters() if p.requires_grad)


def test_odd_module_until_a_parameterless_child(tmp_path: Path) -> None:
    src = tmp_path / "odd.pt"
    torch.save(OddModule(), src)
    report, _ = run(src, {"rules": [{"action": "freeze", "until": "act"}]}, tmp_path)
    names = [p["name"] for p in report["parameters"]]
    assert names == [n for n, _ in OddModule().named_parameters()]
    # a prefix of named_parameters() order, which lists the root's own parameters first
    assert frozen(report) == {"gain", "lin.weight"}
    assert names[:2] == ["gain", "lin.weight"]
    # a non-persistent buffer is still pickled with a whole module: it is listed, as named_buffers() does
    assert {b["name"] for b in report["buffers"]} == {"scratch", "kept"}


def test_weight_and_spectral_norm_state_dict(tmp_path: Path) -> None:
    """Parametrized modules only pickle through state_dict(): ``original0/1`` are parameters, the
    spectral norm's ``_u``/``_v`` are buffers."""
    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 4)),
                          parametrizations.spectral_norm(nn.Linear(4, 4)))
    src = tmp_path / "wn.pt"
    torch.save(model.state_dict(), src)
    report, dst = run(src, {"rules": [{"action": "freeze", "names": ["0"]}]}, tmp_path)
    assert {p["name"] for p in report["parameters"]} == {n for n, _ in model.named_parameters()}
    assert {b["name"] for b in report["buffers"]} == {n for n, _ in model.named_buffers()}
    assert frozen(report) == {"0.bias", "0.parametrizations.weight.original0",
                              "0.parametrizations.weight.original1"}
    fresh = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 4)),
                          parametrizations.spectral_norm(nn.Linear(4, 4)))
    fresh.load_state_dict(torch.load(dst, weights_only=True))
    state = apply(fresh, dst)
    assert set(state.frozen) == frozen(report)


def test_types_value_on_parameterless_modules_is_named(tmp_path: Path) -> None:
    """Strictness is per rule: an alternative that selects nothing while its rule selects something is a
    warning with its pointer (a typo still shows); a class that exists but holds no parameters is said to
    be exactly that; a rule whose every alternative selects nothing is the error."""
    from layerfreeze.errors import SpecError
    from layerfreeze.freeze import freeze_file

    src = tmp_path / "odd.pt"
    torch.save(OddModule(), src)
    with pytest.raises(SpecError) as err:
        freeze_file(src, {"rules": [{"action": "freeze", "types": ["ReLU"]}]})
    issue = err.value.issues[0]
    assert issue.pointer == "/rules/0/types/0" and "hold no parameters" in issue.message
    report = freeze_file(src, {"rules": [{"action": "freeze", "types": ["ReLU", "Linear"]}]})
    [warning] = [w for w in report.warnings if w.code == "unmatched_value"]
    assert warning.pointer == "/rules/0/types/0" and "hold no parameters" in warning.message
    assert frozen(report.model_dump(mode="json")) == {"lin.weight", "tail.weight", "tail.bias"}


def test_types_spelled_as_users_import_them(tmp_path: Path) -> None:
    from layerfreeze.freeze import freeze_file

    model = BERT()
    src = tmp_path / "bert.pt"
    torch.save(model, src)
    want = _classic(model, ("BertLayer",))
    spellings = ("BertLayer", "transformers.BertLayer", "transformers.models.bert.modeling_bert.BertLayer")
    for spelling in spellings:
        report = freeze_file(src, {"rules": [{"action": "freeze", "types": [spelling]}]})
        assert frozen(report.model_dump(mode="json")) == want, spelling
