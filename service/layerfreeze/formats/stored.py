"""A model read once, kept as JSON: its inventory and the byte sites a freeze rewrites.

    doc = describe(archive)                       # after open_archive(): plain JSON-able data
    inventory = inventory_from(doc)               # for selection, reports and previews
    segments = plan(doc, base, final, spec_sha)   # the output as a delta over the stored file

The service stores ``doc`` next to the model's file, so re-freezing never parses the upload again:
a plan reads at most the small ``data.pkl`` member (for its CRC), whatever the model's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from layerfreeze.core.model import Inventory, ModuleInfo, TensorInfo
from layerfreeze.errors import FormatError
from layerfreeze.formats.base import Archive
from layerfreeze.formats.segments import Segment

VERSION = 1


def describe(archive: Archive) -> dict[str, Any]:
    doc = dict(archive.stored())
    doc["version"] = VERSION
    doc["inventory"] = asdict(archive.inventory)
    return doc


def inventory_from(doc: Mapping[str, Any]) -> Inventory:
    inv = doc["inventory"]
    return Inventory(
        format=inv["format"],
        tensors=tuple(TensorInfo(t["name"], t["kind"], tuple(t["shape"]), t["dtype"], t["requires_grad"],
                                 tuple(t["aliases"]), t["storage"]) for t in inv["tensors"]),
        modules=tuple(ModuleInfo(m["path"], m["type"], tuple(m["children"])) for m in inv["modules"]),
        types_known=inv["types_known"], children_exact=inv["children_exact"], prefix=inv["prefix"],
        notes=tuple(inv["notes"]),
    )


def unrecordable_of(doc: Mapping[str, Any]) -> frozenset[str]:
    """Parameters whose stored file records no requires_grad (``torch._utils._rebuild_tensor``)."""
    from layerfreeze.formats.torch_objects import flags_from_json, unrecordable

    if "unrecordable" in doc:  # a model directory's description lists them
        return frozenset(doc["unrecordable"])
    return unrecordable(flags_from_json(doc["flags"])) if "flags" in doc else frozenset()


def plan(doc: Mapping[str, Any], base: Path, final: Mapping[str, bool], spec_sha256: str,
         inventory: Inventory | None = None) -> list[Segment]:
    """The frozen output as segments over ``base`` (the stored file ``doc`` describes)."""
    from layerfreeze.formats import legacy, safetensors, torchzip

    planners = {"torchzip": torchzip.plan_segments, "legacy": legacy.plan_segments,
                "safetensors": safetensors.plan_segments}
    if doc.get("version") != VERSION or doc.get("kind") not in planners:
        raise FormatError(f"stored model description of unknown kind {doc.get('kind')!r}")
    return planners[doc["kind"]](doc, inventory or inventory_from(doc), Path(base), final, spec_sha256)
