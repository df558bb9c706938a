"""The interface every format adapter implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from layerfreeze.core.model import Inventory

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
