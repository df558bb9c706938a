"""A Hugging Face model directory read as one model: an index (``*.safetensors.index.json`` or
``*.bin.index.json``) whose ``weight_map`` names the shard of every tensor, the shards, and files that
carry no weights (config, tokenizer, ...).

    model = ShardedModel(files, limits)          # files: relative posix path -> file on disk
    model.inventory                              # every shard's tensors, as one model
    plans = model.plan(final, spec_sha256)       # relative path -> the output file as segments

Every shard is opened by the single-file readers (read as data, never executed). The index and the shards
must agree exactly; any disagreement is a FormatError naming it. The output is the same directory: each
shard patched as a single file is, the index with the freeze state in its ``metadata``, every other file
byte-identical.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from layerfreeze.core.model import FLOATING_DTYPES, Inventory, TensorInfo
from layerfreeze.errors import FormatError, LayerfreezeError, LimitExceeded
from layerfreeze.formats.base import Archive
from layerfreeze.formats.module_tree import modules_from_names
from layerfreeze.formats.segments import Segment
from layerfreeze.limits import ReadLimits

INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")  # what save_pretrained writes unsharded
METADATA_KEY = "layerfreeze"
MAX_INDEX_BYTES = 64 << 20  # a 1e6-tensor index is ~100 MB only for absurd names; real ones are < 5 MB


def is_index(path: str) -> bool:
    return path.endswith(INDEX_SUFFIXES)


def files_of_directory(root: Path) -> dict[str, Path]:
    """Every regular file under ``root`` by its relative posix path; links are refused (a link could
    point anywhere, and the output would not be the same directory)."""
    root = Path(root)
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise FormatError(f"{rel!r} is a symbolic link; a model directory holds regular files only")
        if path.is_file():
            files[rel] = path
        elif not path.is_dir():
            raise FormatError(f"{rel!r} is not a regular file")
    return files


def check_paths(paths: Iterable[str]) -> None:
    """Refuse any path that is not a plain relative path inside the model directory: absolute paths,
    ``..`` or ``.`` segments, empty segments, backslashes, control characters, and names that repeat or
    differ only in case (they would collide on a case-insensitive file system)."""
    seen: dict[str, str] = {}
    for path in paths:
        parts = path.split("/")
        if (not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts)
                or any(ord(c) < 32 or c == "\x7f" for c in path) or len(path) > 4096):
            raise FormatError(f"{path[:200]!r} is not a relative path inside the model directory "
                              "(no leading '/', no '.' or '..' or empty segments, no backslashes)")
        folded = path.casefold()
        if folded in seen:
            raise FormatError(f"{path[:200]!r} and {seen[folded][:200]!r} name the same file "
                              "(names that differ only in case collide on many file systems)")
        seen[folded] = path
    for path in seen.values():
        parts = path.casefold().split("/")
        for i in range(1, len(parts)):
            if (folder := "/".join(parts[:i])) in seen:
                raise FormatError(f"{path[:200]!r} lies inside {seen[folder][:200]!r}, which is a file: "
                                  "a path is both a file and a folder")


@dataclasses.dataclass
class ShardSet:
    """One index and its shards (relative paths, in the order the index first names them)."""

    index: str | None  # None: an unsharded directory's one weights file, no index
    doc: dict[str, Any]
    weight_map: dict[str, str]  # tensor name -> shard's relative path
    shards: Mapping[str, Archive | _StoredShard]

    @property
    def label(self) -> str:
        return self.index or next(iter(self.shards))


class ShardedModel:
    def __init__(self, files: Mapping[str, Path], limits: ReadLimits = ReadLimits(),  # noqa: B008
                 sets: list[ShardSet] | None = None) -> None:
        check_paths(files)
        self.files = {str(k): Path(v) for k, v in files.items()}
        if sets is not None:  # from a stored description (``from_description``): nothing is read
            self.sets = sets
        else:
            self.sets = _read_sets(self.files, limits)
        primary = self.sets[0]
        for other in self.sets[1:]:
            if set(other.weight_map) != set(primary.weight_map):
                diff = sorted(set(other.weight_map) ^ set(primary.weight_map))
                raise FormatError(f"{other.label} and {primary.label} list different tensors "
                                  f"(e.g. {diff[0]!r}); a directory holds one model")
        self.inventory = _merged_inventory(primary)
        self.unrecordable = frozenset().union(*(getattr(a, "unrecordable", frozenset())
                                                for s in self.sets for a in s.shards.values()))

    def describe(self) -> dict[str, Any] | None:
        """What a later freeze needs without reading the shards again, as JSON: each set's index document
        and each shard's stored description (``formats.stored``); None when a shard's reader keeps none."""
        from layerfreeze.formats.stored import describe

        try:
            return {"sets": [{"index": s.index, "doc": s.doc, "weight_map": s.weight_map,
                              "shards": {p: dict(a.doc) if isinstance(a, _StoredShard) else describe(a)
                                         for p, a in s.shards.items()}} for s in self.sets]}
        except (AttributeError, NotImplementedError, TypeError):
            return None

    @classmethod
    def from_description(cls, files: Mapping[str, Path], description: Mapping[str, Any]) -> ShardedModel:
        """The model ``describe`` described, over the same files (stored blobs, which never change)."""
        sets_ = description.get("sets")
        if not sets_ or any(p not in files for s in sets_ for p in s["shards"]):
            raise FormatError("the stored description does not fit the model directory's files")
        sets = [ShardSet(index=s["index"], doc=s["doc"], weight_map=dict(s["weight_map"]),
                         shards={p: _StoredShard(d, Path(files[p])) for p, d in s["shards"].items()})
                for s in description["sets"]]
        return cls(files, sets=sets)

    @property
    def index(self) -> str | None:
        return self.sets[0].index

    @property
    def shard_of(self) -> dict[str, str]:
        return dict(self.sets[0].weight_map)

    def plan(self, final: Mapping[str, bool], spec_sha256: str) -> dict[str, list[Segment]]:
        """Every file of the output as segments over the file of the same path."""
        params = [t for t in self.inventory.tensors if t.kind == "parameter"]
        state = {t.name: bool(final.get(t.name, t.requires_grad is not False)) and t.dtype in FLOATING_DTYPES
                 for t in params}
        record = {"format_version": 1, "frozen": [n for n, v in state.items() if not v],
                  "trainable": [n for n, v in state.items() if v], "spec_sha256": spec_sha256}
        plans: dict[str, list[Segment]] = {}
        for path, file in self.files.items():
            plans[path] = [(0, file.stat().st_size)] if file.stat().st_size else []
        for shard_set in self.sets:
            for path, archive in shard_set.shards.items():
                plans[path] = archive.plan(final, spec_sha256)
            if shard_set.index is None:
                continue
            doc = dict(shard_set.doc)
            metadata = dict(doc.get("metadata") or {})
            metadata[METADATA_KEY] = record
            doc["metadata"] = metadata
            plans[shard_set.index] = [(json.dumps(doc, indent=2) + "\n").encode("utf-8")]
        return plans


class _StoredShard:
    """A shard as its stored description gives it: the inventory and the plan, read from no file but the
    few bytes a plan checks (``formats.stored.plan``)."""

    def __init__(self, doc: Mapping[str, Any], path: Path) -> None:
        from layerfreeze.formats.stored import inventory_from, unrecordable_of

        self.doc, self.path = doc, path
        self.inventory = inventory_from(doc)
        self.unrecordable = unrecordable_of(doc)

    def plan(self, final: Mapping[str, bool], spec_sha256: str) -> list[Segment]:
        from layerfreeze.formats.stored import plan

        return plan(self.doc, self.path, final, spec_sha256, self.inventory)


def _read_sets(files: Mapping[str, Path], limits: ReadLimits) -> list[ShardSet]:
    indexes = sorted((p for p in files if is_index(p)), key=lambda p: (not p.endswith(
        INDEX_SUFFIXES[0]), p))  # safetensors first: it is what from_pretrained loads by default
    if indexes:
        return [_read_set(idx, files, limits) for idx in indexes]
    singles = [p for p in SINGLE_FILES if p in files]  # an unsharded directory: one weights file, or both
    if not singles:
        raise FormatError("the model directory has no index (*.safetensors.index.json or "
                          "*.bin.index.json) naming its shards, and no " + " or ".join(SINGLE_FILES))
    return [_single_set(p, files, limits) for p in singles]


def _read_set(index: str, files: Mapping[str, Path], limits: ReadLimits) -> ShardSet:
    doc = _read_index(index, files[index])
    weight_map = doc["weight_map"]
    folder = posixpath.dirname(index)
    resolved: dict[str, str] = {}
    order: list[str] = []
    for name, shard in weight_map.items():
        path = posixpath.normpath(posixpath.join(folder, shard)) if folder else posixpath.normpath(shard)
        if path not in files:
            raise FormatError(f"{index} maps {name!r} to shard {shard!r}, which is not in the model")
        if is_index(path):
            raise FormatError(f"{index} names the index {shard!r} as a shard")
        resolved[name] = path
        if path not in order:
            order.append(path)
    shards = {path: _open_shard(path, files[path], limits) for path in order}
    holder: dict[str, str] = {}
    for path, archive in shards.items():
        for name in _names(archive.inventory):
            if name in holder:
                raise FormatError(f"{name!r} is held by two shards, {holder[name]} and {path}")
            holder[name] = path
    for name, path in resolved.items():
        if holder.get(name) != path:
            where = f"it is in {holder[name]}" if name in holder else "no shard holds it"
            raise FormatError(f"{index} maps {name!r} to {path}, but {where}")
    for name, path in holder.items():
        if name not in resolved:
            raise FormatError(f"shard {path} holds {name!r}, which {index} does not list")
    return ShardSet(index=index, doc=doc, weight_map=resolved, shards=shards)


def _single_set(path: str, files: Mapping[str, Path], limits: ReadLimits) -> ShardSet:
    archive = _open_shard(path, files[path], limits)
    return ShardSet(index=None, doc={}, weight_map=dict.fromkeys(_names(archive.inventory), path),
                    shards={path: archive})


def _open_shard(path: str, file: Path, limits: ReadLimits) -> Archive:
    """The single-file reader's archive; its errors name the shard (the class and fields unchanged)."""
    from layerfreeze.formats.detect import open_archive

    try:
        return open_archive(file, limits)
    except LayerfreezeError as exc:
        exc.detail = f"{path}: {exc.detail}"
        exc.args = (exc.detail,)
        raise


def _read_index(index: str, path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise LimitExceeded(f"{index} has {size} bytes (limit {MAX_INDEX_BYTES})", limit="max_index_bytes",
                            value=size, maximum=MAX_INDEX_BYTES)
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_unique_keys(index))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{index} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict) or not doc["weight_map"]:
        raise FormatError(f"{index} has no weight_map object naming the shards")
    if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in doc["weight_map"].items()):
        raise FormatError(f"{index}: weight_map must map tensor names to shard file names (strings)")
    if not isinstance(doc.get("metadata", {}), dict):
        raise FormatError(f"{index}: metadata must be a JSON object")
    return doc


def _unique_keys(index: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise FormatError(f"{index} names {key[:80]!r} twice; readers differ on which one they keep")
            out[key] = value
        return out
    return hook


def _names(inventory: Inventory) -> list[str]:
    return [n for t in inventory.tensors for n in (t.name, *t.aliases)]


def _merged_inventory(shard_set: ShardSet) -> Inventory:
    """The shards' tensors as one model, in shard order (``.bin`` shards are written in definition
    order, so concatenating them keeps it); storage keys are made distinct per shard."""
    if len(shard_set.shards) == 1:  # one file: its reader's inventory as it is (module tree included)
        return next(iter(shard_set.shards.values())).inventory
    tensors: list[TensorInfo] = []
    notes: list[str] = []
    formats = set()
    for path, archive in shard_set.shards.items():
        inv = archive.inventory
        formats.add(inv.format)
        tensors.extend(dataclasses.replace(t, storage=f"{path}:{t.storage}" if t.storage else None)
                       for t in inv.tensors)
        notes.extend(n for n in inv.notes if n not in notes)
    if len(formats) != 1:
        raise FormatError(f"the shards of {shard_set.label} are of different formats: {sorted(formats)}")
    modules, _ = modules_from_names([t.name for t in tensors])
    return Inventory(format=formats.pop(), tensors=tuple(tensors), modules=modules, types_known=False,
                     children_exact=False, notes=tuple(notes))
