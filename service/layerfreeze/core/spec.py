"""The freeze spec (CONTRACT section 1): parsing, validation with JSON pointers, and a canonical hash.

    spec = parse_spec('{"rules": [{"action": "freeze", "names": ["encoder.layer.[0-5]"]}]}')

Everything that can be checked without a model is checked here (unknown keys, wrong types, empty lists,
invalid regexes and globs), so a front end can reject a bad spec before it reads a single byte of the
upload. What depends on the model (a rule selecting nothing) is checked by ``core.selection``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from layerfreeze.core.patterns import GlobError, glob_to_regex
from layerfreeze.errors import SpecError, SpecIssue

SELECTORS = ("names", "regex", "types", "children", "until", "params")

# Size caps: they bound the cost of reading a spec (JSON, validation, compiling its patterns) to
# milliseconds, and keep it small next to any real model. docs/threat-model.md lists them.
MAX_SPEC_BYTES = 256 * 1024  # the whole JSON text
MAX_RULES = 1000
MAX_VALUES = 10_000  # entries of every selector list (names, regex, types, params, indices) together
MAX_PATTERN_CHARS = 1024  # one name glob or regular expression
MAX_PATTERN_TOTAL = 16 * 1024  # all regular expressions and globs with wildcards together
MAX_REGEXES = 32  # regular expressions in the whole spec (each may spend core.patterns.MATCH_BUDGET_S)


class _Strict(BaseModel):
    # JSON types are taken as they are: "1" is not a number, 1 is not a boolean.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Children(_Strict):
    """``list(module.children())[start:stop]`` or ``[indices]`` of the module at ``of`` ("" = root)."""

    of: str = ""
    start: int | None = None
    stop: int | None = None
    indices: list[int] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _slice_or_indices(self) -> Children:
        if self.indices is not None and (self.start is not None or self.stop is not None):
            raise ValueError("use either start/stop or indices, not both")
        return self


class Rule(_Strict):
    action: Literal["freeze", "unfreeze"]
    names: list[str] | None = Field(default=None, min_length=1)
    regex: list[str] | None = Field(default=None, min_length=1)
    types: list[str] | None = Field(default=None, min_length=1)
    children: Children | None = None
    until: str | None = None
    params: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _has_selector(self) -> Rule:
        if not self.selectors():
            raise ValueError(f"a rule needs at least one selector: {', '.join(SELECTORS)}")
        return self

    def selectors(self) -> tuple[str, ...]:
        return tuple(s for s in SELECTORS if getattr(self, s) is not None)


class FreezeSpec(_Strict):
    rules: list[Rule] = Field(default_factory=list)
    strict: bool = True


def parse_spec(raw: str | bytes | Mapping[str, Any] | FreezeSpec) -> FreezeSpec:
    """Parse and validate a spec; raise SpecError listing every problem with its JSON pointer."""
    if isinstance(raw, FreezeSpec):
        return raw
    if isinstance(raw, (str, bytes, bytearray)):
        if len(raw) > MAX_SPEC_BYTES:
            issue = SpecIssue("", f"the spec is {len(raw)} bytes long; the limit is {MAX_SPEC_BYTES}")
            raise SpecError(f"invalid freeze spec: {issue.message}", [issue])
        if isinstance(raw, (bytes, bytearray)) and raw.startswith(b"\xef\xbb\xbf"):
            raw = bytes(raw[3:])  # a UTF-8 byte-order mark, as some editors write
        try:
            data = json.loads(raw, object_pairs_hook=_KeyedObject.from_pairs)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise SpecError("the spec is not valid JSON", [SpecIssue("", f"not valid JSON: {exc}")]) from exc
        duplicates = list(_duplicate_keys(data, ()))
        if duplicates:
            raise SpecError(_summary(duplicates), duplicates)
    else:
        data = raw
    if not isinstance(data, Mapping):
        raise SpecError("the spec must be a JSON object", [SpecIssue("", "expected an object")])
    try:
        spec = FreezeSpec.model_validate(_plain(data))
    except RecursionError as exc:
        raise SpecError("the spec is nested too deeply", [SpecIssue("", "nested too deeply")]) from exc
    except ValidationError as exc:
        issues = [_issue_from_pydantic(err) for err in exc.errors()]
        raise SpecError(_summary(issues), issues) from exc
    issues = _size_issues(spec) or _semantic_issues(spec)
    if issues:
        raise SpecError(_summary(issues), issues)
    return spec


def spec_sha256(spec: FreezeSpec) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace, defaults made explicit, nulls dropped):
    equal specs hash equally however they were written (``{}`` == ``{"rules": [], "strict": true}``)."""
    canonical = json.dumps(
        spec.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"),
    )  # ASCII escapes: any string hashes, lone surrogates included
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def json_pointer(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """RFC 6901: ``("rules", 2, "regex", 0)`` -> ``/rules/2/regex/0``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class _KeyedObject(dict[str, Any]):
    """A JSON object that remembers keys it saw twice (json.loads would silently keep the last one, so
    ``{"names": ["0"], "names": ["1"]}`` would quietly drop a selector)."""

    duplicates: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _KeyedObject:
        obj = cls(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            repeated: dict[str, None] = {}  # ordered, each key once
            for key, _ in pairs:
                if key in seen:
                    repeated[key] = None
                seen.add(key)
            obj.duplicates = tuple(repeated)
        return obj


def _duplicate_keys(value: Any, path: tuple[str | int, ...]) -> Iterator[SpecIssue]:
    if isinstance(value, _KeyedObject):
        for key in value.duplicates:
            yield SpecIssue(json_pointer((*path, key)), f"key {key!r} appears more than once in this object")
        for key, item in value.items():
            yield from _duplicate_keys(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _duplicate_keys(item, (*path, index))


def _plain(value: Any) -> Any:
    # Mappings and tuples from Python callers become the JSON shapes the strict models expect.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_KEYS_AT = {"rule": (*SELECTORS, "action"), "children": ("of", "start", "stop", "indices"),
            "spec": ("rules", "strict")}


def _issue_from_pydantic(err: Any) -> SpecIssue:
    loc = tuple(err["loc"])
    kind = err["type"]
    pointer = json_pointer(loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        where = "children" if len(loc) >= 2 and loc[-2] == "children" else "rule" if len(loc) > 1 else "spec"
        allowed = _KEYS_AT[where]
        return SpecIssue(pointer, f"unknown key {key!r} (allowed: {', '.join(allowed)})",
                         tuple(difflib.get_close_matches(key, allowed, n=3, cutoff=0.5)))
    if kind == "literal_error":
        return SpecIssue(pointer, "must be \"freeze\" or \"unfreeze\"")
    if kind == "missing":
        return SpecIssue(pointer, "required")
    if kind == "too_short":
        return SpecIssue(pointer, "must not be empty: give at least one value or leave the key out")
    if kind == "value_error":
        return SpecIssue(pointer, str(err["msg"]).removeprefix("Value error, "))
    expected = {"string_type": "a string", "int_type": "an integer", "bool_type": "true or false",
                "list_type": "a list", "model_type": "an object", "dict_type": "an object"}
    if kind == "list_type" and isinstance(err.get("input"), str):
        value = err["input"]
        return SpecIssue(pointer, f"must be a list of strings, got a string: write [{json.dumps(value)}]",
                         (json.dumps([value]),))
    if kind in expected:
        return SpecIssue(pointer, f"must be {expected[kind]}, got {_json_type(err.get('input'))}")
    return SpecIssue(pointer, str(err["msg"]))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "an object"


def _has_wildcards(glob: str) -> bool:
    return "*" in glob or "?" in glob or "[" in glob


def _size_issues(spec: FreezeSpec) -> list[SpecIssue]:
    """Caps checked before any pattern is compiled, so an oversized spec costs only its JSON parse."""
    issues: list[SpecIssue] = []
    if len(spec.rules) > MAX_RULES:
        issues.append(SpecIssue("/rules", f"{len(spec.rules)} rules; the limit is {MAX_RULES}"))
        return issues
    values = pattern_chars = regexes = 0
    for i, rule in enumerate(spec.rules):
        for key in ("names", "regex", "types", "params"):
            for j, value in enumerate(getattr(rule, key) or ()):
                values += 1
                if key == "regex" or (key == "names" and _has_wildcards(value)):
                    pattern_chars += len(value)
                if key in ("names", "regex") and len(value) > MAX_PATTERN_CHARS:
                    issues.append(SpecIssue(json_pointer(("rules", i, key, j)),
                                            f"a pattern of {len(value)} characters; the limit is "
                                            f"{MAX_PATTERN_CHARS}"))
        regexes += len(rule.regex or ())
        values += len(rule.children.indices or ()) if rule.children is not None else 0
    for total, limit, what in ((values, MAX_VALUES, "selector values"),
                               (pattern_chars, MAX_PATTERN_TOTAL, "characters of patterns"),
                               (regexes, MAX_REGEXES, "regular expressions")):
        if total > limit:
            issues.append(SpecIssue("/rules", f"{total} {what} in all; the limit is {limit}"))
    return issues


def _semantic_issues(spec: FreezeSpec) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for i, rule in enumerate(spec.rules):
        base = ("rules", i)
        for j, pattern in enumerate(rule.names or ()):
            try:
                if _has_wildcards(pattern):
                    glob_to_regex(pattern)  # raises on a malformed glob; compiling it is the worker's job
                elif "" in pattern.split("."):
                    raise GlobError("an empty segment (two dots, or a leading or trailing dot)")
            except GlobError as exc:
                issues.append(SpecIssue(json_pointer((*base, "names", j)), f"invalid name pattern: {exc}"))
        for j, pattern in enumerate(rule.regex or ()):
            try:
                re.compile(pattern)
            except re.error as exc:
                issues.append(SpecIssue(json_pointer((*base, "regex", j)),
                                        f"invalid regular expression: {exc}"))
        for key in ("types", "params"):
            for j, value in enumerate(getattr(rule, key) or ()):
                if not value or any(c.isspace() for c in value):
                    issues.append(SpecIssue(json_pointer((*base, key, j)),
                                            "must be a non-empty name without spaces"))
        for j, value in enumerate(rule.params or ()):
            if "." in value:
                issues.append(SpecIssue(json_pointer((*base, "params", j)),
                                        "a leaf name has no dots (use names for dotted paths)",
                                        (value.rsplit(".", 1)[1],)))
        if rule.until is not None and not rule.until:
            issues.append(SpecIssue(json_pointer((*base, "until")),
                                    'must name a module ("" would be the whole model: use names ["**"])'))
    return issues


def _summary(issues: list[SpecIssue]) -> str:
    first = issues[0]
    where = first.pointer or "the spec"
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return f"invalid freeze spec: {where}: {first.message}{more}"
