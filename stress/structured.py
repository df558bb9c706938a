"""Mutations that know the structure of a torch checkpoint: zip member names (case, duplicates, order,
extra members, other roots), pickle opcodes (booleans, memo reuse, BUILD/state, rebuilder and storage
names, storage keys) and TorchScript ``code/`` text (indentation, comments, repeated declarations).

Each mutator takes the file's bytes and a ``random.Random`` and returns new bytes, or None when it does
not apply to that file. ``mutate(data, rng)`` picks one or two applicable mutators.
"""

from __future__ import annotations

import io
import pickletools
import random
import zipfile
from collections.abc import Callable

from stress import code_variants

Mutator = Callable[[bytes, random.Random], "bytes | None"]


# -- containers ------------------------------------------------------------------------------------------
def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(info.filename, z.open(info).read()) for info in z.infolist()]


def make_zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some mutants
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for name, body in members:
                z.writestr(name, body)
    return buf.getvalue()


def split_pickles(data: bytes, count: int) -> tuple[list[bytes], bytes]:
    """The first ``count`` pickles of a stream and the bytes after them (the legacy format's layout)."""
    out, pos = [], 0
    for _ in range(count):
        f = io.BytesIO(data[pos:])
        for op, _, _ in pickletools.genops(f):
            if op.name == "STOP":
                break
        end = pos + f.tell()
        out.append(data[pos:end])
        pos = end
    return out, data[pos:]


def main_pickle(data: bytes) -> tuple[bytes, Callable[[bytes], bytes]] | None:
    """The pickle that holds the model and a function that puts a new one in its place."""
    try:
        if is_zip(data):
            members = zip_members(data)
            index = next(i for i, (n, _) in enumerate(members) if n.endswith("/data.pkl"))

            def put_zip(new: bytes) -> bytes:
                members[index] = (members[index][0], new)
                return make_zip(members)

            return members[index][1], put_zip
        pickles, tail = split_pickles(data, 5)

        def put_legacy(new: bytes) -> bytes:
            return b"".join(pickles[:3]) + new + pickles[4] + tail

        return pickles[3], put_legacy
    except (StopIteration, ValueError, zipfile.BadZipFile, EOFError):
        return None


# -- pickle opcodes --------------------------------------------------------------------------------------
def opcodes(p: bytes) -> list[tuple[str, object, int, int]]:
    """(name, arg, start, end) of every opcode."""
    raw = list(pickletools.genops(p))
    out = []
    for i, (op, arg, pos) in enumerate(raw):
        end = raw[i + 1][2] if i + 1 < len(raw) else len(p)
        out.append((op.name, arg, pos or 0, end or len(p)))
    return out


def _replace(p: bytes, start: int, end: int, new: bytes) -> bytes:
    return p[:start] + new + p[end:]


def _memo_indices(ops: list[tuple[str, object, int, int]]) -> list[tuple[int, int]]:
    """(memo index, position) of every memo write."""
    out, count = [], 0
    for name, arg, start, _ in ops:
        if name in ("BINPUT", "LONG_BINPUT", "PUT"):
            out.append((int(arg), start))  # type: ignore[call-overload]
        elif name == "MEMOIZE":
            out.append((count, start))
        if name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            count += 1
    return out


def _get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + index.to_bytes(4, "little")


def _put(index: int) -> bytes:
    return b"q" + bytes([index]) if index < 256 else b"r" + index.to_bytes(4, "little")


def flip_bool(p: bytes, rng: random.Random) -> bytes | None:
    bools = [o for o in opcodes(p) if o[0] in ("NEWTRUE", "NEWFALSE")]
    if not bools:
        return None
    name, _, start, end = rng.choice(bools)
    return _replace(p, start, end, b"\x89" if name == "NEWTRUE" else b"\x88")


def bool_as_int(p: bytes, rng: random.Random) -> bytes | None:
    bools = [o for o in opcodes(p) if o[0] in ("NEWTRUE", "NEWFALSE")]
    if not bools:
        return None
    name, _, start, end = rng.choice(bools)
    return _replace(p, start, end, b"I01\n" if name == "NEWTRUE" else b"I00\n")


def share_bool(p: bytes, rng: random.Random) -> bytes | None:
    """Memoize one boolean and read it back in place of another (one byte, two meanings)."""
    ops = opcodes(p)
    bools = [o for o in ops if o[0] in ("NEWTRUE", "NEWFALSE")]
    if len(bools) < 2:
        return None
    a, b = sorted(rng.sample(bools, 2), key=lambda o: o[2])
    index = max((i for i, _ in _memo_indices(ops)), default=-1) + 1
    p = _replace(p, b[2], b[3], _get(index))
    return _replace(p, a[3], a[3], _put(index))


def reget(p: bytes, rng: random.Random) -> bytes | None:
    """A memo read that fetches another earlier value (another storage, key, rebuilder or flag)."""
    ops = opcodes(p)
    gets = [o for o in ops if o[0] in ("BINGET", "LONG_BINGET")]
    if not gets:
        return None
    _, _, start, end = rng.choice(gets)
    earlier = [i for i, pos in _memo_indices(ops) if pos < start]
    return _replace(p, start, end, _get(rng.choice(earlier))) if earlier else None


def storage_key(p: bytes, rng: random.Random) -> bytes | None:
    """Rename a storage key in one persistent id to another key (or a new one)."""
    ops = opcodes(p)
    keys = [o for o in ops if o[0] in ("BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINSTRING", "BINSTRING")
            and isinstance(o[1], str) and o[1].isdigit()]
    if not keys:
        return None
    _, _, start, end = rng.choice(keys)
    new = rng.choice([str(o[1]) for o in keys] + ["99"]).encode()
    return _replace(p, start, end, b"U" + bytes([len(new)]) + new)


_GLOBAL_FAMILIES = (
    ["torch\nFloatStorage", "torch\nLongStorage", "torch\nHalfStorage", "torch\nDoubleStorage",
     "torch\nBoolStorage", "torch\nUntypedStorage", "torch.cuda\nFloatStorage"],
    ["torch._utils\n_rebuild_tensor_v2", "torch._utils\n_rebuild_tensor", "torch._utils\n_rebuild_parameter",
     "torch._utils\n_rebuild_parameter_with_state", "torch._utils\n_rebuild_tensor_v3"],
    ["collections\nOrderedDict", "builtins\ndict", "torch._utils\n_rebuild_parameter"],
)


def swap_global(p: bytes, rng: random.Random) -> bytes | None:
    ops = opcodes(p)
    found = []
    for o in ops:
        if o[0] == "GLOBAL":
            text = str(o[1]).replace(" ", "\n", 1)
            for family in _GLOBAL_FAMILIES:
                if text in family:
                    found.append((o, family))
    if not found:
        return None
    (_, _, start, end), family = rng.choice(found)
    return _replace(p, start, end, b"c" + rng.choice(family).encode() + b"\n")


def add_build(p: bytes, rng: random.Random) -> bytes | None:
    """BUILD right after a call's result: state set on a rebuilt tensor, parameter or dict."""
    reduces = [o for o in opcodes(p) if o[0] == "REDUCE"]
    if not reduces:
        return None
    _, _, _, end = rng.choice(reduces)
    state = rng.choice([b"}", b"N", b")", b"}U\rrequires_grad\x88s", b"(\x88K\x00)t"])
    return _replace(p, end, end, state + b"b")


def rebind_key(p: bytes, rng: random.Random) -> bytes | None:
    """Before STOP, SETITEM an existing string key of the top dict to another memoized value."""
    ops = opcodes(p)
    if ops[-1][0] != "STOP":
        return None
    strings = [str(o[1]) for o in ops if o[0] in ("SHORT_BINUNICODE", "BINUNICODE", "SHORT_BINSTRING")]
    memo = _memo_indices(ops)
    if not strings or not memo:
        return None
    key = rng.choice(strings).encode()
    tail = b"X" + len(key).to_bytes(4, "little") + key + _get(rng.choice(memo)[0]) + b"s"
    return _replace(p, ops[-1][2], ops[-1][2], tail)


def drop_op(p: bytes, rng: random.Random) -> bytes | None:
    ops = opcodes(p)
    droppable = [o for o in ops if o[0] in ("BINPUT", "LONG_BINPUT", "MEMOIZE", "TUPLE", "MARK", "SETITEMS",
                                            "EMPTY_DICT", "REDUCE", "BINPERSID")]
    if not droppable:
        return None
    _, _, start, end = rng.choice(droppable)
    return _replace(p, start, end, b"")


PICKLE_MUTATORS: dict[str, Callable[[bytes, random.Random], bytes | None]] = {
    "flip_bool": flip_bool, "bool_as_int": bool_as_int, "share_bool": share_bool, "reget": reget,
    "storage_key": storage_key, "swap_global": swap_global, "add_build": add_build,
    "rebind_key": rebind_key, "drop_op": drop_op,
}


def _on_pickle(fn: Callable[[bytes, random.Random], bytes | None]) -> Mutator:
    def mutate_pickle(data: bytes, rng: random.Random) -> bytes | None:
        found = main_pickle(data)
        if found is None:
            return None
        p, put = found
        try:
            new = fn(p, rng)
        except (ValueError, IndexError):
            return None
        return put(new) if new is not None else None

    return mutate_pickle


# -- zip members -----------------------------------------------------------------------------------------
def _zip_mutator(fn: Callable[[list[tuple[str, bytes]], random.Random], list[tuple[str, bytes]] | None]
                 ) -> Mutator:
    def mutate_zip(data: bytes, rng: random.Random) -> bytes | None:
        if not is_zip(data):
            return None
        try:
            members = zip_members(data)
        except (zipfile.BadZipFile, ValueError, EOFError):
            return None
        new = fn(members, rng)
        return make_zip(new) if new is not None else None

    return mutate_zip


def _recase(name: str, rng: random.Random) -> str:
    root, _, rel = name.partition("/")
    style = rng.choice(["upper", "title", "one"])
    if style == "upper":
        rel = rel.upper()
    elif style == "title":
        rel = rel.title()
    else:
        letters = [i for i, c in enumerate(rel) if c.isalpha()]
        if letters:
            i = rng.choice(letters)
            rel = rel[:i] + rel[i].swapcase() + rel[i + 1:]
    return f"{root}/{rel}"


def _flipped_pickle(body: bytes, rng: random.Random) -> bytes:
    try:
        return flip_bool(body, rng) or body
    except (ValueError, IndexError):
        return body


def case_shadow(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    """A second member whose name differs only in case (for data.pkl: with other flags)."""
    name, body = rng.choice(members)
    if name.endswith(".pkl"):
        body = _flipped_pickle(body, rng)
    twin = (_recase(name, rng), body)
    at = rng.choice([0, len(members), members.index(next(m for m in members if m[0] == name)) + 1])
    return [*members[:at], twin, *members[at:]]


def exact_duplicate(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    name, body = rng.choice(members)
    if name.endswith(".pkl"):
        body = _flipped_pickle(body, rng)
    at = rng.randint(0, len(members))
    return [*members[:at], (name, body), *members[at:]]


def recase(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    """One member renamed in another case, no twin left (torch still finds it)."""
    i = rng.randrange(len(members))
    out = list(members)
    out[i] = (_recase(out[i][0], rng), out[i][1])
    return out


def reorder(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    out = list(members)
    rng.shuffle(out)
    return out


def extra_member(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    root = members[0][0].split("/", 1)[0]
    pkl = next((b for n, b in members if n.endswith("/data.pkl")), b"\x80\x02}q\x00.")
    extra = rng.choice([
        (f"{root}/extra/notes.txt", b"hello"), (f"{root}/data/999", b"\x00" * 8),
        (f"{root}/sub/data.pkl", _flipped_pickle(pkl, rng)), ("other/data.pkl", _flipped_pickle(pkl, rng)),
        (f"{root}/constants.pkl", b"\x80\x02).") , (f"{root}/byteorder", b"big"),
        (f"{root}2/data.pkl", pkl), (f"{root.upper()}/data.pkl", _flipped_pickle(pkl, rng)),
    ])
    at = rng.choice([0, len(members), rng.randint(0, len(members))])
    return [*members[:at], extra, *members[at:]]


def drop_member(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    i = rng.randrange(len(members))
    return members[:i] + members[i + 1:]


def big_endian(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]] | None:
    out = [(n, b"big" if n.endswith("/byteorder") else b) for n, b in members]
    return out if out != members else None


ZIP_MUTATORS = {
    "case_shadow": case_shadow, "exact_duplicate": exact_duplicate, "recase": recase, "reorder": reorder,
    "extra_member": extra_member, "drop_member": drop_member, "big_endian": big_endian,
}


MUTATORS: dict[str, Mutator] = {
    **{f"pickle.{k}": _on_pickle(v) for k, v in PICKLE_MUTATORS.items()},
    **{f"zip.{k}": _zip_mutator(v) for k, v in ZIP_MUTATORS.items()},
    **{f"code.{k}": _zip_mutator(v) for k, v in code_variants.CODE_MUTATORS.items()},
}


def mutate(data: bytes, rng: random.Random, kinds: tuple[str, ...] = ()) -> tuple[bytes, list[str]]:
    """One or two mutations that apply to ``data`` (of the given kinds, e.g. ("code.",)); their names."""
    names = [n for n in MUTATORS if not kinds or n.startswith(kinds)]
    applied: list[str] = []
    for _ in range(rng.choice([1, 1, 2])):
        for name in rng.sample(names, len(names)):
            new = MUTATORS[name](data, rng)
            if new is not None and new != data:
                data = new
                applied.append(name)
                break
    return data, applied
