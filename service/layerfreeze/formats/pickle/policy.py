"""What a checkpoint pickle may name and call: an allowlist of calls, a refusal list of modules.

Classes are only ever recorded as names (an object built by NEWOBJ with no arguments is an opaque record,
never constructed); the only callables the machine "applies" are the few below, and it applies them
symbolically. Everything else a pickle asks to call is refused, as is any reference into a module that no
checkpoint class comes from.
"""

from __future__ import annotations

import re

from layerfreeze.errors import FormatError, UnsafePickleError
from layerfreeze.formats.dtypes import ITEMSIZE, storage_dtype

# Callables a checkpoint legitimately applies (REDUCE), mapped to how the machine treats them.
ALLOWED_CALLS = {
    "collections.OrderedDict": "ordered_dict",
    "builtins.set": "set",
    "builtins.frozenset": "frozenset",
    "__builtin__.set": "set",
    "builtins.bytearray": "bytearray",
    "builtins.complex": "opaque",
    # protocol 2 (what torch.save writes) spells builtins the Python 2 way
    "__builtin__.frozenset": "frozenset",
    "__builtin__.bytearray": "bytearray",
    "__builtin__.complex": "opaque",
    "torch._utils._rebuild_tensor": "tensor",
    "torch._utils._rebuild_tensor_v2": "tensor",
    "torch._utils._rebuild_tensor_v3": "tensor",
    "torch._utils._rebuild_parameter": "parameter",
    "torch._utils._rebuild_parameter_with_state": "parameter",
    "torch._tensor._rebuild_from_type_v2": "from_type",
    "_codecs.encode": "encode",
    "copyreg._reconstructor": "reconstructor",
    "copy_reg._reconstructor": "reconstructor",
    "torch.Size": "size",
    "torch.device": "opaque",
    "torch.serialization._get_layout": "opaque",
    "numpy.core.multiarray._reconstruct": "opaque",
    "numpy._core.multiarray._reconstruct": "opaque",
    "numpy.core.multiarray.scalar": "opaque",
    "numpy._core.multiarray.scalar": "opaque",
    "numpy.dtype": "opaque",
    # TorchScript's data.pkl tags typed lists; each returns its first argument unchanged.
    "torch.jit._pickle.build_intlist": "first",
    "torch.jit._pickle.build_tensorlist": "first",
    "torch.jit._pickle.build_doublelist": "first",
    "torch.jit._pickle.build_boollist": "first",
    "torch.jit._pickle.restore_type_tag": "first",
}

# torch's other tensor rebuilders: harmless, but their tensors (quantized, sparse, nested, on a device
# or without storage) are not something we can freeze; they get a plain "not supported" answer.
UNSUPPORTED_TENSOR_CALLS = frozenset(
    f"torch._utils.{name}" for name in (
        "_rebuild_qtensor", "_rebuild_sparse_tensor", "_rebuild_sparse_csr_tensor", "_rebuild_nested_tensor",
        "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass", "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor", "_rebuild_xla_tensor", "_rebuild_mtia_tensor",
    )
)

# Top-level modules whose names have no place in a checkpoint: process, import and code machinery.
REFUSED_MODULES = frozenset(
    {
        "os", "posix", "nt", "posixpath", "ntpath", "sys", "subprocess", "_posixsubprocess", "builtins",
        "__builtin__", "importlib", "pkgutil", "runpy", "code", "codeop", "pty", "shutil", "socket",
        "timeit", "pip", "webbrowser", "ctypes", "pickle", "_pickle", "marshal", "types", "functools",
        "operator", "_operator", "io", "_io", "tempfile", "glob", "signal", "multiprocessing", "threading",
        "_thread", "asyncio", "http", "urllib", "ssl", "platform", "inspect", "gc", "pdb", "bdb",
        "cProfile", "profile", "trace", "idlelib", "lib2to3", "distutils", "setuptools", "dill", "joblib",
        "cloudpickle", "copyreg", "copy_reg", "_codecs", "codecs", "zipimport", "site", "ensurepip",
        "venv", "sysconfig", "shelve", "dbm", "sqlite3", "ftplib", "smtplib", "telnetlib", "xmlrpc",
        "requests", "urllib3", "httpx", "aiohttp", "yaml", "pydoc", "linecache", "tokenize", "ast",
        "compileall", "py_compile", "zipfile", "tarfile", "fileinput", "pathlib", "commands", "popen2",
        "_ctypes", "mmap", "resource", "pwd", "grp", "select", "selectors", "socketserver",
        "contextlib", "atexit", "weakref", "_weakref", "abc", "logging", "unittest", "doctest",
        "imp", "nturl2path", "posixshmem", "_posixshmem", "cgi", "wsgiref", "numexpr", "sympy",
    }
)
# Builtins a checkpoint needs: containers and the base of copyreg reconstruction.
ALLOWED_BUILTINS = frozenset({"set", "frozenset", "object", "bytearray", "complex", "slice"})
ALLOWED_COPYREG = frozenset({"_reconstructor"})
ALLOWED_CODECS = frozenset({"encode"})

# torch modules that load, compile, run or fetch code; nothing in them belongs in a checkpoint.
REFUSED_TORCH_PREFIXES = (
    "torch.hub", "torch.jit", "torch.export", "torch.serialization", "torch.package", "torch.utils",
    "torch._dynamo", "torch._inductor", "torch.compiler", "torch.distributed", "torch.multiprocessing",
    "torch.backends", "torch.cuda", "torch.onnx", "torch.fx", "torch._export", "torch._C._jit",
    "torch.library", "torch._ops", "torch.ops", "torch._library", "torch.testing", "torch._higher_order",
)
ALLOWED_TORCH_SERIALIZATION = frozenset({"_get_layout"})
# Names directly under ``torch`` a checkpoint uses: tensor/storage classes, dtypes, layouts, formats.
TORCH_TOP_ALLOWED = frozenset(
    {"Size", "device", "Tensor", "dtype", "layout", "memory_format", "strided", "sparse_coo",
     "contiguous_format", "channels_last", "preserve_format", "per_tensor_affine", "per_channel_affine",
     "per_tensor_symmetric", "per_channel_symmetric", "per_channel_affine_float_qparams"}
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DUNDER = re.compile(r"^__\w*__$")


def _refuse(qualname: str, pos: int, why: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"pickle references {qualname} at byte {pos}; {why}", global_name=qualname, offset=pos
    )


def check_global(module: str, name: str, pos: int) -> None:
    """Refuse a GLOBAL / STACK_GLOBAL that no checkpoint has reason to name. Raises UnsafePickleError."""
    qualname = f"{module}.{name}"
    mod_parts = module.split(".")
    name_parts = name.split(".")
    if not all(_IDENT.match(p) for p in mod_parts + name_parts):
        raise _refuse(qualname, pos, "that is not a valid module or class name")
    if any(_DUNDER.match(p) for p in name_parts) or any(
        _DUNDER.match(p) and p not in ("__torch__", "__main__", "__builtin__") for p in mod_parts
    ):
        raise _refuse(qualname, pos, "a checkpoint never reaches into dunder attributes")
    top = mod_parts[0]
    if top in ("builtins", "__builtin__"):
        if name in ALLOWED_BUILTINS:
            return
    elif top in ("copyreg", "copy_reg"):
        if name in ALLOWED_COPYREG:
            return
    elif top == "_codecs":
        if name in ALLOWED_CODECS:
            return
    elif top == "torch":
        check_torch_global(module, name, pos)
        return
    elif top == "__torch__":
        return  # TorchScript class names: opaque, resolved only against the archive's own code/
    if top in REFUSED_MODULES:
        raise _refuse(qualname, pos, "a checkpoint never needs that")


def check_torch_global(module: str, name: str, pos: int) -> None:
    qualname = f"{module}.{name}"
    if qualname in ALLOWED_CALLS:
        return
    if module == "torch":
        if name in TORCH_TOP_ALLOWED or name in ITEMSIZE or storage_dtype(module, name) is not None:
            return  # torch.float16, torch.int64, ...: a dtype as a value (``{"dtype": torch.float16}``)
        if name in ("float", "double", "half", "long", "int", "short", "bool", "cfloat", "cdouble", "uint8"):
            return  # dtype aliases
        if name in ("qint8", "quint8", "qint32", "quint4x2", "quint2x4"):
            return  # quantized dtypes: inert names (their tensors get the plain "not supported" answer)
        raise _refuse(qualname, pos, "only dtypes, storages and tensor classes of torch belong in a "
                      "checkpoint")
    if module == "torch.serialization" and name in ALLOWED_TORCH_SERIALIZATION:
        return
    if module == "torch.cuda" and storage_dtype(module, name) is not None:
        return  # old files name CUDA storage classes; torch.load maps them (an inert name here)
    for prefix in REFUSED_TORCH_PREFIXES:
        if module == prefix or module.startswith(prefix + "."):
            raise _refuse(qualname, pos, "a checkpoint never needs that")
    # torch.nn / torch.ao module classes and functions stored as attributes (an activation) are opaque
    # names: they are recorded, never imported and never called.


def call_kind(qualname: str, pos: int) -> str:
    """How the machine treats a call of ``qualname``; refuses anything not allowlisted."""
    kind = ALLOWED_CALLS.get(qualname)
    if qualname in UNSUPPORTED_TENSOR_CALLS:
        raise FormatError(f"the checkpoint rebuilds a tensor with {qualname} (byte {pos}): quantized, "
                          "sparse, nested, meta or device tensors are not supported")
    if kind is None:
        raise UnsafePickleError(
            f"pickle calls {qualname} at byte {pos}; a checkpoint never needs that",
            global_name=qualname,
            offset=pos,
        )
    return kind
