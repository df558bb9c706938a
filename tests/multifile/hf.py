"""Tiny random-weight transformers models saved as sharded Hugging Face directories (made here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

SHARD_BYTES = 10_000  # tiny models, split into 3 or more shards


def tiny_model(kind: str) -> Any:
    import transformers as tf

    torch.manual_seed(0)
    if kind == "bert":
        return tf.BertModel(tf.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3,
                                          num_attention_heads=2, intermediate_size=32,
                                          max_position_embeddings=32))
    if kind == "gpt2":
        return tf.GPT2Model(tf.GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2, n_positions=32))
    if kind == "llama":
        return tf.LlamaModel(tf.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                            num_hidden_layers=3, num_attention_heads=2,
                                            num_key_value_heads=1, max_position_embeddings=32))
    raise ValueError(kind)


def model_class(kind: str) -> Any:
    import transformers as tf

    return {"bert": tf.BertModel, "gpt2": tf.GPT2Model, "llama": tf.LlamaModel}[kind]


def save_sharded(model: Any, out: Path, fmt: str) -> Path:
    """``save_pretrained`` with small shards; ``fmt="bin"`` writes ``pytorch_model-0000k-of-0000n.bin``
    shards and ``pytorch_model.bin.index.json`` as transformers did before safetensors (state dict in
    definition order, cut into consecutive shards, each written by ``torch.save``)."""
    model.save_pretrained(out, max_shard_size=SHARD_BYTES)
    if fmt == "safetensors":
        return out
    for f in out.glob("model*.safetensors*"):
        f.unlink()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in model.state_dict().items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.detach().clone().contiguous()
        size += nbytes
    weight_map: dict[str, str] = {}
    for k, shard in enumerate(shards, 1):
        fname = f"pytorch_model-{k:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, out / fname)
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.element_size() for s in shards for t in s.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out
