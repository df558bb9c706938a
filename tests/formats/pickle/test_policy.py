"""The pickle policy (formats/pickle/policy.py): what a checkpoint may name and call. Names a real torch
checkpoint carries pass; process, import and code machinery is refused with UnsafePickleError."""

from __future__ import annotations

import pytest
from layerfreeze.errors import FormatError, UnsafePickleError
from layerfreeze.formats.pickle.policy import call_kind, check_global

# what torch.save, TorchScript and numpy-carrying checkpoints really name
CHECKPOINT_GLOBALS = [
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"), ("torch", "BFloat16Storage"),
    ("torch", "float"), ("torch", "uint8"), ("torch", "bool"), ("torch", "Size"),
    ("torch", "device"), ("torch", "Tensor"), ("torch.nn.modules.linear", "Linear"),
    ("torch.nn.modules.container", "Sequential"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("builtins", "set"), ("__builtin__", "set"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy", "dtype"), ("__torch__", "MyModule"),
    ("__main__", "MyNet"), ("mypackage.models", "Backbone"),
]

HOSTILE_GLOBALS = [
    ("os", "system"), ("posix", "system"), ("nt", "system"), ("subprocess", "Popen"), ("builtins", "eval"),
    ("builtins", "exec"), ("builtins", "getattr"), ("builtins", "__import__"), ("__builtin__", "eval"),
    ("importlib", "import_module"), ("pkgutil", "resolve_name"), ("runpy", "run_path"), ("pickle", "loads"),
    ("marshal", "loads"), ("functools", "partial"), ("operator", "attrgetter"), ("copyreg", "__newobj__"),
    ("torch.serialization", "load"), ("torch.serialization", "os.system"), ("torch.hub", "load"),
    ("torch.jit", "load"), ("torch", "load"),
    ("collections", "OrderedDict.__init__"), ("os.path", "join"), ("a b", "c"), ("mod", "x;y"),
]


@pytest.mark.parametrize(("module", "name"), CHECKPOINT_GLOBALS)
def test_names_a_checkpoint_carries_pass(module: str, name: str) -> None:
    check_global(module, name, 0)


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "int64", "float8_e4m3fn", "complex64"])
def test_dtype_values_pass(name: str) -> None:
    check_global("torch", name, 0)


@pytest.mark.parametrize(("module", "name"), HOSTILE_GLOBALS)
def test_code_machinery_is_refused_by_name(module: str, name: str) -> None:
    with pytest.raises(UnsafePickleError) as err:
        check_global(module, name, 42)
    assert err.value.offset == 42


@pytest.mark.parametrize(("qualname", "kind"), [
    ("collections.OrderedDict", "ordered_dict"), ("torch._utils._rebuild_tensor_v2", "tensor"),
    ("torch._utils._rebuild_parameter", "parameter"), ("builtins.set", "set"), ("torch.Size", "size"),
])
def test_allowlisted_calls_are_applied_symbolically(qualname: str, kind: str) -> None:
    assert call_kind(qualname, 0) == kind


@pytest.mark.parametrize("qualname", [
    "torch.nn.modules.linear.Linear",  # a class: recorded by name, never constructed by a call
    "mypackage.models.Backbone", "numpy.load", "os.system", "builtins.getattr",
    "torch.storage._load_from_bytes",
])
def test_any_other_call_is_refused(qualname: str) -> None:
    with pytest.raises(UnsafePickleError) as err:
        call_kind(qualname, 7)
    assert err.value.global_name == qualname


def test_tensor_kinds_that_cannot_be_frozen_get_a_plain_format_error() -> None:
    with pytest.raises(FormatError) as err:
        call_kind("torch._utils._rebuild_sparse_tensor", 0)
    assert not isinstance(err.value, UnsafePickleError)  # harmless, just not supported
