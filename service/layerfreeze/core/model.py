"""What a reader found in a checkpoint, as plain immutable data.

Readers (``layerfreeze.formats``) build an :class:`Inventory` from an archive without executing it;
the core selects parameters from it and builds the report; the reader's archive writes the new state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TensorKind = Literal["parameter", "buffer"]

FLOATING_DTYPES = frozenset(
    {"float64", "float32", "float16", "bfloat16", "complex128", "complex64", "complex32",
     "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
)  # dtypes that can require grad (torch: floating point and complex)

ITEMSIZE = {  # bytes per element, by dtype name as torch spells it
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8,
    "complex32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
    "uint16": 2, "uint32": 4, "uint64": 8, "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1,
    "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1, "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1,
    "quint2x4": 1, "bits8": 1, "bits16": 2, "untyped": 1,
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One named tensor of the model: a parameter or a buffer, in definition order.

    ``name`` is the state-dict key as stored (for a whole module, what ``named_parameters()`` /
    ``named_buffers()`` give). ``requires_grad`` is the flag recorded in the file, or None where the
    format records nothing (weight-only files); the core then derives the start state.
    ``aliases`` are further names of the very same tensor (tied parameters), listed once here.
    ``storage`` identifies the bytes behind the tensor (e.g. a zip storage key); two entries with the
    same ``storage`` share memory even when they are not aliases.
    ``dtype`` uses torch's names without the ``torch.`` prefix ("float32", "bfloat16", "int64", ...).
    """

    name: str
    kind: TensorKind
    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool | None
    aliases: tuple[str, ...] = ()
    storage: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_floating(self) -> bool:
        return self.dtype in FLOATING_DTYPES


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """A module of the model tree. ``path`` is dotted ("" is the root).

    ``type`` is the qualified class name as recorded (``torch.nn.modules.linear.Linear``; TorchScript's
    ``__torch__.`` prefix and ``___torch_mangle_N`` segments removed), or None where unknown.
    ``children`` are the direct children's names in definition order, parameter-less ones included
    whenever the file records them.
    """

    path: str
    type: str | None
    children: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything the core needs to know about one checkpoint.

    ``format`` is one of: torch.state_dict, torch.checkpoint, torch.module, torchscript, safetensors.
    ``modules`` lists every module in ``named_modules()`` order (root first); it may be derived from
    tensor names when the file has no module records, in which case ``types_known`` is False and
    ``children_exact`` says whether parameter-less children are known (a state dict's ``_metadata``
    records them; safetensors does not).
    ``prefix`` is the key prefix under which the model's tensors sit in a checkpoint dict (Lightning
    keeps ``model.`` inside names; this is for the wrapping dict key, e.g. "state_dict"), for the report.
    ``notes`` are human-readable findings of the reader ("state dict found under 'state_dict'; also
    present: optimizer_states, hyper_parameters").
    """

    format: str
    tensors: tuple[TensorInfo, ...]
    modules: tuple[ModuleInfo, ...]
    types_known: bool
    children_exact: bool
    prefix: str | None = None
    notes: tuple[str, ...] = ()
