"""A builder for freeze specs: chained rules producing exactly the service's spec JSON.

    Spec().freeze(names=["features"]).unfreeze(params=["bias"]).freeze(types=["LayerNorm"])

Rules apply in order and the last rule that selects a parameter decides it; selectors inside one rule must
all hold; the values inside one selector are alternatives. The service validates the spec; this builder only
keeps the JSON well-formed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

__all__ = ["Spec", "SpecLike"]

SELECTORS = ("names", "params", "types", "regex", "children", "until")


def _strings(value: str | Iterable[str], selector: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(v, str) for v in items):
        raise ValueError(f"{selector} must be a string or a non-empty list of strings")
    return items


def _children(value: Any) -> dict[str, Any]:
    """``{"of", "start", "stop"}`` / ``{"of", "indices"}``, or a bare ``slice`` / index list on the root."""
    if isinstance(value, slice):
        if value.step not in (None, 1):
            raise ValueError("children: a slice step is not supported")
        out: dict[str, Any] = {"of": ""}
        if value.start is not None:
            out["start"] = value.start
        if value.stop is not None:
            out["stop"] = value.stop
        return out
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(i, int) for i in value):
        return {"of": "", "indices": list(value)}
    raise ValueError("children must be a mapping like {'of': '', 'start': 0, 'stop': 3}, a slice or indices")


class Spec:
    """Ordered freeze / unfreeze rules plus ``strict`` (a rule that selects nothing is an error)."""

    __slots__ = ("rules", "strict")

    def __init__(self, rules: Iterable[Mapping[str, Any]] = (), *, strict: bool = True) -> None:
        self.rules: list[dict[str, Any]] = [dict(r) for r in rules]
        self.strict = strict

    def freeze(self, **selectors: Any) -> Spec:
        """Add a rule that freezes what all the given selectors select."""
        return self._add("freeze", selectors)

    def unfreeze(self, **selectors: Any) -> Spec:
        """Add a rule that makes trainable what all the given selectors select."""
        return self._add("unfreeze", selectors)

    def _add(
        self,
        action: str,
        selectors: dict[str, Any],
    ) -> Spec:
        unknown = sorted(set(selectors) - set(SELECTORS))
        if unknown:
            raise TypeError(f"unknown selector(s) {', '.join(unknown)}; use {', '.join(SELECTORS)}")
        given = {k: v for k, v in selectors.items() if v is not None}
        if not given:
            raise ValueError(f"a {action} rule needs at least one selector: {', '.join(SELECTORS)}")
        rule: dict[str, Any] = {"action": action}
        for key in SELECTORS:  # a stable key order keeps the JSON (and its hash) reproducible
            if key not in given:
                continue
            value = given[key]
            if key == "children":
                rule[key] = _children(value)
            elif key == "until":
                if not isinstance(value, str):
                    raise ValueError("until must be a module path (a string)")
                rule[key] = value
            else:
                rule[key] = _strings(value, key)
        self.rules.append(rule)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [dict(r) for r in self.rules], "strict": self.strict}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        rules = data.get("rules", [])
        if not isinstance(rules, list):
            raise ValueError("rules must be a list")
        return cls(rules, strict=bool(data.get("strict", True)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Spec({self.rules!r}, strict={self.strict!r})"


SpecLike = Union[Spec, Mapping[str, Any], str, bytes, Path, None]  # noqa: UP007 (a runtime alias)


def spec_json(spec: SpecLike) -> str:
    """The JSON text to send for anything accepted as a spec: a Spec, a dict, JSON text / bytes, a file."""
    if spec is None:
        return "{}"
    if isinstance(spec, Spec):
        return spec.to_json()
    if isinstance(spec, Mapping):
        return json.dumps(dict(spec))
    if isinstance(spec, Path):
        return spec.read_text(encoding="utf-8")
    if isinstance(spec, bytes):
        return spec.decode("utf-8")
    if isinstance(spec, str):
        return spec
    raise TypeError(f"a spec must be a Spec, a mapping, JSON text or a Path, not {type(spec).__name__}")
