"""Which tensors of a weight-only file are parameters and which are buffers.

A bare state dict or a safetensors file does not record the difference. The rule, shared by every reader
so that all formats agree: a tensor of a non-floating dtype is a buffer (it can never require grad); a
floating tensor is a parameter unless its last name segment is one that torch.nn and the common model
libraries use only for buffers (BatchNorm statistics, rotary frequencies, position ids, ...).
"""

from __future__ import annotations

from layerfreeze.core.model import FLOATING_DTYPES, TensorKind

KNOWN_BUFFER_LEAVES = frozenset(
    {
        "running_mean",  # BatchNorm / InstanceNorm statistics
        "running_var",
        "num_batches_tracked",
        "inv_freq",  # rotary embeddings
        "position_ids",  # transformers
        "token_type_ids",
        "relative_position_index",  # Swin and friends
        "masked_bias",  # older GPT-2
        "anchor_grid",  # YOLO detection heads
        "weight_u",  # torch.nn.utils.spectral_norm (its weight_v is ambiguous: weight_norm's parameter)
    }
)

# torch.nn.utils.parametrizations.spectral_norm keeps its power-iteration vectors as buffers of the
# parametrization module: ``<module>.parametrizations.<tensor>.<i>._u`` / ``._v``.
_PARAMETRIZATION_BUFFER_LEAVES = ("_u", "_v")


def tensor_kind(name: str, dtype: str) -> TensorKind:
    """``"buffer"`` for non-floating dtypes and known buffer leaf names, else ``"parameter"``."""
    if dtype not in FLOATING_DTYPES:
        return "buffer"
    parts = name.split(".")
    if parts[-1] in KNOWN_BUFFER_LEAVES:
        return "buffer"
    if (parts[-1] in _PARAMETRIZATION_BUFFER_LEAVES and len(parts) >= 4
            and parts[-4] == "parametrizations" and parts[-2].isdigit()):
        return "buffer"
    return "parameter"
