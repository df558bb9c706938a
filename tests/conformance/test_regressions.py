"""Every class of disagreement between our reader and torch's loader, fixed: the file is either read
exactly as torch reads it (and our output loads as the report says), or refused naming the ambiguity."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from layerfreeze.errors import AmbiguousArchive, AmbiguousCheckpoint, FormatError, LimitExceeded
from layerfreeze.formats.detect import open_archive
from layerfreeze.freeze import freeze_file

from conformance import hostile


def _refused(path: Path, ambiguity: str | None = None) -> AmbiguousCheckpoint | FormatError:
    with pytest.raises(FormatError) as info:
        open_archive(path)
    if ambiguity is not None:
        assert isinstance(info.value, AmbiguousCheckpoint), info.value
        assert info.value.ambiguity == ambiguity
        assert "ambiguous" in str(info.value)
    return info.value


def _params(report) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    return {p.name: p.requires_grad for p in report.parameters}


# 1. pickled state ---------------------------------------------------------------------------------------
def test_state_requires_grad_is_the_flag_torch_keeps_and_the_one_we_patch(tmp_path: Path) -> None:
    path = hostile.state_requires_grad(tmp_path)
    assert hostile.load_flags(path) == {"layer.weight": True, "layer.bias": True}  # the state wins
    inv = open_archive(path).inventory
    assert {t.name: t.requires_grad for t in inv.tensors} == {"layer.weight": True, "layer.bias": True}
    out = tmp_path / "out.pt"
    report = freeze_file(path, {"rules": [{"action": "freeze", "names": ["layer.weight"]}]}, out)
    assert _params(report) == {"layer.weight": False, "layer.bias": True}
    assert hostile.load_flags(out) == _params(report)


def test_state_that_replaces_data_is_refused(tmp_path: Path) -> None:
    path = hostile.state_sets_data(tmp_path)
    loaded = torch.load(path, weights_only=True)["layer.weight"]
    assert loaded.dtype == torch.float64 and tuple(loaded.shape) == (2,)  # not what the record says
    err = _refused(path, "pickled-state")
    assert "'data'" in str(err)


def test_inert_states_torch_writes_keep_working(tmp_path: Path) -> None:
    model = hostile.build("seq3")
    params = dict(model.named_parameters())
    params["0.weight"]._is_hf_initialized = True  # what transformers leaves on its parameters
    buf = torch.arange(4)
    buf.__dict__.clear()  # a tensor with an (empty) __dict__: _rebuild_from_type_v2 with state {}
    torch.save({**params, "position_ids": buf}, tmp_path / "inert.pt")
    inv = open_archive(tmp_path / "inert.pt").inventory
    assert [t.name for t in inv.tensors] == [*params, "position_ids"]


# 2. zip members torch finds without regard to case ---------------------------------------------------
def test_case_shadowed_data_pkl_is_refused(tmp_path: Path) -> None:
    err = _refused(hostile.case_shadowed(tmp_path), "zip-duplicate-member")
    assert isinstance(err, AmbiguousArchive) and "differ only in case" in str(err)


def test_member_stored_in_another_case_is_read_as_torch_reads_it(tmp_path: Path) -> None:
    src = hostile.save(hostile.build("seq3"), tmp_path / "a.pt", "state_dict")
    members = [(n.replace("data.pkl", "DATA.PKL").replace("/data/", "/DATA/"), b)
               for n, b in hostile.zip_members(src.read_bytes())]
    path = tmp_path / "upper.pt"
    path.write_bytes(hostile.make_zip(members))
    assert set(hostile.load_flags(path)) == {t.name for t in open_archive(path).inventory.tensors}


def test_torchscript_marker_in_another_case_is_refused(tmp_path: Path) -> None:
    src = hostile.save(hostile.build("seq3"), tmp_path / "ts.pt", "torchscript")
    members = [(n.replace("constants.pkl", "CONSTANTS.pkl"), b)
               for n, b in hostile.zip_members(src.read_bytes())]
    path = tmp_path / "ts-upper.pt"
    path.write_bytes(hostile.make_zip(members))
    _refused(path, "zip-member-case")


# 3. storage dtype fixed by the first persistent id ---------------------------------------------------
def test_storage_named_with_two_dtypes_is_refused(tmp_path: Path) -> None:
    path = hostile.storage_two_dtypes(tmp_path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["a.bias"].dtype == torch.float32  # the first naming decided, not the record's own
    err = _refused(path, "storage-reuse")
    assert "float32" in str(err) and "int64" in str(err)


# 4. TorchScript declarations ---------------------------------------------------------------------------
@pytest.mark.parametrize("transform", [hostile.reindented, hostile.repeated_empty_decl, hostile.split_decl])
def test_torchscript_declarations_in_any_form_torch_accepts(tmp_path: Path, transform) -> None:  # type: ignore[no-untyped-def]
    path = hostile.torchscript_code(tmp_path, transform)
    scripted = torch.jit.load(str(path))
    expected = {n: p.requires_grad for n, p in scripted.named_parameters()}
    inv = open_archive(path).inventory
    assert {t.name: t.requires_grad for t in inv.tensors if t.kind == "parameter"} == expected
    assert {t.name for t in inv.tensors if t.kind == "buffer"} == {n for n, _ in scripted.named_buffers()}


def test_torchscript_code_file_stored_in_another_case(tmp_path: Path) -> None:
    src = hostile.save(hostile.build("nested"), tmp_path / "ts.pt", "torchscript")
    members = [(n.replace("/code/__torch__/torch/nn/modules/", "/CODE/__torch__/torch/nn/MODULES/"), b)
               for n, b in hostile.zip_members(src.read_bytes())]
    path = tmp_path / "ts-case.pt"
    path.write_bytes(hostile.make_zip(members))
    scripted = torch.jit.load(str(path))
    inv = open_archive(path).inventory
    expected = [n for n, _ in scripted.named_parameters()]
    assert [t.name for t in inv.tensors if t.kind == "parameter"] == expected


def test_torchscript_declaration_in_a_comment_is_refused(tmp_path: Path) -> None:
    _refused(hostile.torchscript_code(tmp_path, hostile.commented_decl), "torchscript-code")


# 6. bounded cost per opcode ------------------------------------------------------------------------------
def test_hash_dag_pickle_is_refused_at_once(tmp_path: Path) -> None:
    path = hostile.hash_dag(tmp_path)
    t0 = time.perf_counter()
    err = _refused(path)
    assert time.perf_counter() - t0 < 1.0
    assert "dict key" in str(err)


# 8. names, and so the report, bounded ------------------------------------------------------------------
def test_name_of_thousands_of_segments_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LimitExceeded) as info:
        open_archive(hostile.deep_name(tmp_path))
    assert info.value.limit in ("max_name_chars", "max_name_segments")


def test_report_size_stays_proportional_to_the_upload(tmp_path: Path) -> None:
    path = hostile.deep_name(tmp_path, segments=64)  # at the limit: still read
    report = freeze_file(path, {}, None)
    size = len(report.model_dump_json())
    assert size < 100 * path.stat().st_size, (size, path.stat().st_size)


# the old _rebuild_tensor (LPIPS weights) ------------------------------------------------------------
@pytest.mark.parametrize("legacy", [True, False])
def test_old_rebuild_tensor_is_read_and_reported_as_torch_loads_it(tmp_path: Path, legacy: bool) -> None:
    path = hostile.old_rebuild(tmp_path, legacy)
    assert set(hostile.load_flags(path).values()) == {False}
    out = tmp_path / "out.pth"
    report = freeze_file(path, {"rules": [{"action": "freeze", "names": ["lin0.**"]}]}, out)
    assert set(_params(report).values()) == {False}  # what torch.load gives, whatever the spec
    warning = next(w for w in report.warnings if w.code == "requires_grad_not_recordable")
    assert "_rebuild_tensor" in warning.message and "lin1.model.1.weight" in warning.message
    assert hostile.load_flags(out) == _params(report)


# flags shared through the memo; integer tensors with requires_grad ------------------------------------
def test_flag_shared_through_the_memo_is_never_patched_into_other_values(tmp_path: Path) -> None:
    path = hostile.shared_flag(tmp_path)
    assert hostile.load_flags(path) == {"a.weight": False, "b.weight": False}
    report = freeze_file(path, {"rules": [{"action": "freeze", "names": ["a.**"]}]}, tmp_path / "ok.pt")
    assert hostile.load_flags(tmp_path / "ok.pt") == _params(report)  # nothing to change: written
    with pytest.raises(FormatError, match="memo"):
        freeze_file(path, {"rules": [{"action": "unfreeze", "names": ["b.**"]}]}, tmp_path / "no.pt")
    assert not (tmp_path / "no.pt").exists()


def test_integer_tensor_recorded_as_requiring_grad_is_refused_like_torch(tmp_path: Path) -> None:
    entries = [hostile.synth.Entry("step", "0", "LongStorage", 1, (), rebuild="tensor", flag=True)]
    path = hostile.synth.write_zip(entries, tmp_path / "int.pt")
    with pytest.raises(RuntimeError):
        torch.load(path, weights_only=True)
    with pytest.raises(FormatError, match="requires_grad=True"):
        open_archive(path)


def test_tensor_attribute_list_covers_the_installed_torch() -> None:
    from layerfreeze.formats.pickle.tensor_state import TENSOR_ATTRIBUTES

    names = {n for n in set(dir(torch.nn.Parameter)) | set(dir(torch.Tensor))
             if not (n.startswith("__") and n.endswith("__"))}
    assert names <= TENSOR_ATTRIBUTES, sorted(names - TENSOR_ATTRIBUTES)[:20]


def test_file_that_is_also_a_tar_archive_is_refused(tmp_path: Path) -> None:
    """torch.load tries the oldest (tar) format before the pickle stream we read."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("(storages")  # starts like a protocol-0 pickle
        info.size = 4
        tar.addfile(info, io.BytesIO(b"data"))
    path = tmp_path / "polyglot.pt"
    path.write_bytes(buf.getvalue())
    _refused(path, "legacy-tar")


def test_shared_module_lists_every_path_torch_lists(tmp_path: Path) -> None:
    path, model = hostile.shared_module(tmp_path)
    inv = open_archive(path).inventory
    ours = {n for t in inv.tensors for n in (t.name, *t.aliases)}
    assert ours == {n for n, _ in model.named_parameters(remove_duplicate=False)}
    assert [m.path for m in inv.modules] == [n for n, _ in model.named_modules()]


def test_shared_tables_cannot_multiply_names_beyond_the_pickle(tmp_path: Path) -> None:
    path = hostile.shared_tables(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        open_archive(path)
    assert info.value.limit == "max_tensors" and time.perf_counter() - t0 < 2.0


def test_safetensors_header_naming_a_tensor_twice_is_refused(tmp_path: Path) -> None:
    import struct

    entry = '{"dtype":"%s","shape":[2],"data_offsets":[0,8]}'
    raw = ('{"w":' + entry % "F32" + ',"w":' + entry % "I32" + "}").encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    _refused(path, "safetensors-duplicate-key")
