"""The symbolic pickle machine (formats/pickle/machine.py) on small inline pickles: plain values come back
as the real unpickler would build them, tensors as inert records that point into the file, and nothing
is ever imported or called."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from layerfreeze.errors import LimitExceeded, PickleFormatError, UnsafePickleError
from layerfreeze.formats.pickle.machine import PickleMachine
from layerfreeze.formats.pickle.nodes import Flag, OrderedDictNode, ParamNode, TensorNode
from layerfreeze.limits import ReadLimits

from testing.hostile import PAYLOADS, Asm, payload_pickle


def run(data: bytes, limits: ReadLimits | None = None) -> object:
    return PickleMachine(limits or ReadLimits()).run(io.BytesIO(data))


def plain(value: object) -> object:
    """The machine's value with its patchable Flag records turned back into bools."""
    if isinstance(value, Flag):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def torch_data_pkl(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(buf) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


VALUES = {"ints": [0, -1, 255, 65536, 2**40], "floats": [2.5, -0.0], "text": ["", "x", "é" * 300],
          "bytes": b"\x00\xff", "none": None, "flags": [True, False], "tuple": (1, (2,), ()),
          "set": {1, 2}, "frozen": frozenset({3})}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_values_read_as_the_unpickler_builds_them(protocol: int) -> None:
    assert plain(run(pickle.dumps(VALUES, protocol=protocol))) == VALUES


def test_memo_keeps_shared_objects_shared() -> None:
    shared = [1, 2]
    got = run(pickle.dumps({"a": shared, "b": shared}, protocol=2))
    assert got["a"] is got["b"]  # type: ignore[index]


def test_ordered_dict_is_applied_symbolically() -> None:
    got = run(pickle.dumps(collections.OrderedDict(b=1, a=2), protocol=2))
    assert isinstance(got, OrderedDictNode) and list(got.items()) == [("b", 1), ("a", 2)]


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_flag_knows_the_byte_that_holds_it(protocol: int) -> None:
    """Patching a Flag where it says flips the value the real unpickler reads, and nothing else."""
    data = pickle.dumps({"requires_grad": True, "other": 7}, protocol=protocol)
    flag = run(data)["requires_grad"]  # type: ignore[index]
    assert isinstance(flag, Flag) and flag.value is True
    at, raw = flag.patch(False)
    patched = data[:at] + raw + data[at + len(raw):]
    assert pickle.loads(patched) == {"requires_grad": False, "other": 7}


def test_torch_tensors_are_records_of_their_storage() -> None:
    lin = torch.nn.Linear(3, 2)
    lin.bias.requires_grad_(False)
    got = run(torch_data_pkl({"w": lin.weight, "b": lin.bias.data, "tied": lin.weight,
                              "row": lin.weight.data[1]}))
    w, b, row = got["w"], got["b"], got["row"]  # type: ignore[index]
    assert isinstance(w, ParamNode) and w.flag.value is True
    assert (w.tensor.shape, w.tensor.stride, w.tensor.dtype) == ((2, 3), (3, 1), "float32")
    assert got["tied"] is w  # type: ignore[index]  # one identity: tied weights stay tied
    assert isinstance(b, TensorNode) and b.shape == (2,) and b.storage.numel == 2
    assert isinstance(row, TensorNode) and row.storage.key == w.tensor.storage.key and row.offset == 3


@pytest.mark.parametrize("technique", sorted(PAYLOADS))
def test_every_known_code_running_technique_is_refused(technique: str, tmp_path: Path) -> None:
    _, low, high = PAYLOADS[technique]
    for protocol in range(low, high + 1):
        with pytest.raises(UnsafePickleError):
            run(payload_pickle(technique, protocol, str(tmp_path / "marker")))
    assert not (tmp_path / "marker").exists()


def test_a_refusal_names_the_global_and_where_it_is() -> None:
    data = Asm(2).call("os", "system", "true").bytes()
    with pytest.raises(UnsafePickleError) as err:
        run(data)
    assert err.value.global_name == "os.system"
    assert data[err.value.offset:err.value.offset + 1] == b"c"  # the GLOBAL opcode


@pytest.mark.parametrize("data", [
    b"",  # nothing
    b"\x80\x02K\x01",  # no STOP
    b"\x80\x02K\x01K\x02.",  # two values left at STOP
    b"\x80\x02.",  # STOP on an empty stack
    b"\x80\x02h\x05.",  # memo read before written
    b"\x80\x020.",  # POP of an empty stack
    b"\x80\x02e.",  # APPENDS without a MARK
    b"\x80\x09}.",  # a protocol that does not exist
    b"not a pickle",
])
def test_malformed_streams_are_format_errors(data: bytes) -> None:
    with pytest.raises(PickleFormatError):
        run(data)


def test_opcode_count_is_limited() -> None:
    with pytest.raises(LimitExceeded) as err:
        run(pickle.dumps(list(range(100)), protocol=2), ReadLimits(max_pickle_ops=50))
    assert err.value.limit == "max_pickle_ops"


def test_nesting_depth_is_limited() -> None:
    deep: list[object] = []
    for _ in range(60):
        deep = [deep]
    assert run(pickle.dumps(deep, protocol=2), ReadLimits(max_pickle_depth=100)) is not None
    with pytest.raises(LimitExceeded) as err:
        run(pickle.dumps(deep, protocol=2), ReadLimits(max_pickle_depth=20))
    assert err.value.limit == "max_pickle_depth"
