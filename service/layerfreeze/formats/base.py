"""The interface every format adapter implements."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from layerfreeze.core.findings import Finding
from layerfreeze.core.model import Inventory
from layerfreeze.core.selection import Selection

if TYPE_CHECKING:
    from layerfreeze.formats.segments import Segment


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """What ``Archive.write`` produced: the output's size and sha256, and the source's sha256
    (both hashed while copying, so the caller never reads either file a second time)."""

    bytes: int
    sha256: str
    source_sha256: str


class Archive(Protocol):
    """An opened, fully validated checkpoint.

    ``write`` produces the modified checkpoint at ``dst``: same format as the source, every tensor's bytes
    unchanged, and the freeze state inside it. ``final`` maps every parameter name (aliases included) to
    its final ``requires_grad``; ``spec_sha256`` is recorded where the format has room for metadata.
    ``write`` must write to ``dst`` directly (the caller handles temporary names and renames) and must
    not hold the whole file in memory. It returns the sizes and hashes it computed on the way.
    A caller that already hashed the source (the service does while receiving the upload) may pass
    ``source_sha256``: it is returned as is and one hashing pass is saved (optional; added compatibly).
    """

    source: Path
    inventory: Inventory

    def stored(self) -> dict[str, Any]:
        """What a later freeze needs without parsing again, as JSON (see ``formats.stored``)."""

    def plan(self, final: Mapping[str, bool], spec_sha256: str) -> list[Segment]:
        """The output as segments over ``source`` (``formats.segments``): what ``write`` writes."""

    def write(
        self, dst: Path, final: Mapping[str, bool], spec_sha256: str, *, source_sha256: str | None = None
    ) -> WrittenFile: ...


def pin_unrecordable(selection: Selection, names: frozenset[str]) -> Selection:
    """The selection as the output will really load: parameters whose file has no requires_grad to
    write (tensors rebuilt by ``torch._utils._rebuild_tensor``) stay False, whatever the spec decided,
    because that is what ``torch.load`` gives; a warning names them and what the spec wanted."""
    final = list(selection.final)
    wanted: list[str] = []
    for i, p in enumerate(selection.parameters):
        if p.name in names:
            if final[i]:
                wanted.append(p.name)
            final[i] = False
    shown = ", ".join(wanted[:20]) + (f", ... ({len(wanted) - 20} more)" if len(wanted) > 20 else "")
    finding = Finding(
        "requires_grad_not_recordable",
        "this file rebuilds tensors with torch._utils._rebuild_tensor, which records no requires_grad: "
        "torch.load gives requires_grad=False for them, and so does this report, whatever the spec "
        "decides" + (f"; the spec would have made these trainable: {shown}" if wanted else ""),
        tuple(sorted(names)),
    )
    return dataclasses.replace(selection, final=tuple(final),
                               findings=(*selection.findings, finding))
