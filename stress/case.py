"""A corpus case and the builder that writes one to disk with its marker and control."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXTENSIONS = (".bin", ".pt", ".pkl", ".pth", ".ckpt", ".txt", ".safetensors", "")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    group: str
    path: Path
    marker: Path | None = None  # created by the payload if it ever runs
    control: tuple[str, Path] | None = None  # ("pickle" | "torch", file) that proves the payload is live
    # the refusal must be LimitExceeded for one of these ReadLimits fields
    expect_limit: tuple[str, ...] | None = None

    @property
    def filename(self) -> str:
        return self.path.name.split("__", 1)[-1]


class Builder:
    def __init__(self, out: Path, markers: Path) -> None:
        self.out, self.markers = out, markers
        self.cases: list[Case] = []
        out.mkdir(parents=True, exist_ok=True)
        markers.mkdir(parents=True, exist_ok=True)

    def marker(self, name: str) -> str:
        return str(self.markers / f"{name}.ran")

    def add(
        self,
        name: str,
        group: str,
        data: bytes,
        ext: str = ".pt",
        *,
        payload: bool = True,
        control: tuple[str, bytes | Path] | None = None,
        expect_limit: tuple[str, ...] | None = None,
    ) -> None:
        path = self.out / f"{name}__model{ext}"
        path.write_bytes(data)
        ctl: tuple[str, Path] | None = None
        if control is not None:
            kind, src = control
            if isinstance(src, bytes):
                cpath = self.out / f"{name}.control.pkl"
                cpath.write_bytes(src)
                src = cpath
            ctl = (kind, src)
        marker = Path(self.marker(name)) if payload else None
        self.cases.append(Case(name, group, path, marker, ctl, expect_limit))
