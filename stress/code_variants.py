"""TorchScript ``code/`` variants that torch.jit.load may read the same way: indentation of any width,
tabs, CRLF, comments (some mentioning the declarations), repeated, split, moved, annotated or joined
``__parameters__`` / ``__buffers__`` declarations. Each takes the member list of an archive."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_DECL_LINE = re.compile(r"^(\s*)(__parameters__|__buffers__) = \[(.*)\]\s*$")


def _code_text(fn: Callable[[str, random.Random], str | None]) -> Callable[[list[tuple[str, bytes]],
                                                                            random.Random], list | None]:
    def on_code(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]] | None:
        code = [i for i, (n, _) in enumerate(members) if "/code/" in n and n.endswith(".py")]
        if not code:
            return None
        i = rng.choice(code)
        new = fn(members[i][1].decode("utf-8"), rng)
        if new is None:
            return None
        out = list(members)
        out[i] = (out[i][0], new.encode("utf-8"))
        return out

    return on_code


def reindent(text: str, rng: random.Random) -> str:
    width = rng.choice([1, 3, 4, 8])
    return "\n".join(re.sub(r"^((?:  )+)", lambda m: " " * (len(m.group(1)) // 2 * width), line)
                     for line in text.split("\n"))


def add_comments(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(0, len(lines))
        indent = re.match(r"\s*", lines[i - 1] if i else "").group(0)  # type: ignore[union-attr]
        comment = rng.choice(["# a comment", "# __parameters__ = []", "#", "# weight : Tensor"])
        lines.insert(i, indent + comment)
    if rng.random() < 0.5:
        lines = [ln + "  # trailing" if _DECL_LINE.match(ln) else ln for ln in lines]
    return "\n".join(lines)


def _decls(text: str) -> list[tuple[int, re.Match[str]]]:
    return [(i, m) for i, ln in enumerate(text.split("\n")) if (m := _DECL_LINE.match(ln))]


def repeat_decl(text: str, rng: random.Random) -> str | None:
    decls = _decls(text)
    if not decls:
        return None
    i, m = rng.choice(decls)
    lines = text.split("\n")
    extra = rng.choice([lines[i], f"{m.group(1)}{m.group(2)} = []"])
    lines.insert(i + rng.choice([0, 1]), extra)
    return "\n".join(lines)


def split_decl(text: str, rng: random.Random) -> str | None:
    decls = [(i, m) for i, m in _decls(text) if m.group(3).count(",") >= 2]
    if not decls:
        return None
    i, m = rng.choice(decls)
    names = [n.strip() for n in m.group(3).split(",") if n.strip()]
    cut = rng.randint(1, len(names) - 1)
    lines = text.split("\n")
    lines[i:i + 1] = [f"{m.group(1)}{m.group(2)} = [{', '.join(part)}, ]"
                      for part in (names[:cut], names[cut:])]
    return "\n".join(lines)


def move_decl(text: str, rng: random.Random) -> str | None:
    """Move one name from __parameters__ to __buffers__ (a different model; both readers must agree)."""
    decls = dict((m.group(2), (i, m)) for i, m in _decls(text))
    if "__parameters__" not in decls or "__buffers__" not in decls:
        return None
    (pi, pm), (bi, bm) = decls["__parameters__"], decls["__buffers__"]
    names = [n.strip() for n in pm.group(3).split(",") if n.strip()]
    if not names:
        return None
    moved = names.pop(rng.randrange(len(names)))
    buffers = [n.strip() for n in bm.group(3).split(",") if n.strip()] + [moved]
    lines = text.split("\n")
    lines[pi] = f"{pm.group(1)}__parameters__ = [{''.join(n + ', ' for n in names)}]"
    lines[bi] = f"{bm.group(1)}__buffers__ = [{''.join(n + ', ' for n in buffers)}]"
    return "\n".join(lines)


def respell(text: str, rng: random.Random) -> str | None:
    """The same declarations in other spellings: annotated, joined by semicolons, tabs, CRLF, blank lines."""
    style = rng.choice(["annotated", "semicolon", "tabs", "crlf", "blank"])
    if style == "tabs":
        return "\n".join(re.sub(r"^((?:  )+)", lambda m: "\t" * (len(m.group(1)) // 2), ln)
                         for ln in text.split("\n"))
    if style == "crlf":
        return text.replace("\n", "\r\n")
    if style == "blank":
        return text.replace("\n", "\n\n", rng.randint(1, 20))
    decls = _decls(text)
    if not decls:
        return None
    lines = text.split("\n")
    i, m = rng.choice(decls)
    if style == "annotated":
        lines[i] = f"{m.group(1)}{m.group(2)} : List[str] = [{m.group(3)}]"
    elif i + 1 < len(lines) and _DECL_LINE.match(lines[i + 1]):
        lines[i:i + 2] = [lines[i] + "; " + lines[i + 1].strip()]
    return "\n".join(lines)


CODE_MUTATORS = {
    "reindent": _code_text(lambda t, r: reindent(t, r)), "comments": _code_text(add_comments),
    "repeat_decl": _code_text(repeat_decl), "split_decl": _code_text(split_decl),
    "move_decl": _code_text(move_decl), "respell": _code_text(respell),
}
