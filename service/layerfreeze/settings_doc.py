"""Render ``docs/configuration.md`` from :class:`layerfreeze.settings.Settings`, so the page cannot drift.

    python -m layerfreeze.settings_doc docs/configuration.md          # write it
    python -m layerfreeze.settings_doc docs/configuration.md --check  # exit 1 if it is out of date

Every field becomes one row: its environment variable, its default and its ``Field(description=...)``
(the read limits' rows come from :class:`layerfreeze.limits.ReadLimits`, whose fields Settings inherits).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from layerfreeze.settings import Settings

REGENERATE = "make docs  (or: .venv/bin/python -m layerfreeze.settings_doc docs/configuration.md)"

HEADER = """\
# Configuration

<!-- Generated from service/layerfreeze/settings.py by `python -m layerfreeze.settings_doc`; do not edit.
     Regenerate with `make docs`. -->

The service reads its settings from the environment, once, at start-up; nothing else reads environment
variables. Each variable is the setting's name in capitals with the prefix `{prefix}`. An invalid value
stops the service at start-up with a message naming the setting. `layerfreeze serve --host H --port P`
takes the address from its flags; `python -m layerfreeze.server` reads `{prefix}HOST` / `{prefix}PORT`.
The local CLI (`layerfreeze freeze`, `inspect`) uses the read limits' defaults.

| variable | default | meaning |
| --- | --- | --- |
"""

_UNITS = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))
_DURATIONS = ((86400, "day"), (3600, "hour"), (60, "minute"))


def _human(name: str, value: Any) -> str:
    """A reading aid for large defaults: ``8589934592`` -> ``8 GiB``, ``604800`` s -> ``7 days``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return ""
    if name.endswith("_bytes") and float(value).is_integer():
        for size, unit in _UNITS:
            if value >= size and value % size == 0:
                return f"{int(value // size)} {unit}"
    if name.endswith("_s") and float(value).is_integer():
        for size, unit in _DURATIONS:
            if value >= size and value % size == 0:
                count = int(value // size)
                return f"{count} {unit}{'s' if count != 1 else ''}"
    return ""


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def _show(name: str, value: Any) -> str:
    if value is None:
        return "(required)"
    if value == {} or value == [] or value == "":
        return "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = f"`{value}`"
    human = _human(name, value)
    return f"{text} ({human})" if human else text


def rows(settings: type[BaseModel] = Settings) -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting."""
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    return [(f"{prefix}{name.upper()}", _show(name, _default(info)), info.description or "")
            for name, info in settings.model_fields.items()]


def missing_descriptions(settings: type[BaseModel] = Settings) -> list[str]:
    return [var for var, _, description in rows(settings) if not description.strip()]


def render(settings: type[BaseModel] = Settings) -> str:
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    lines = [HEADER.format(prefix=prefix)]
    for var, default, description in rows(settings):
        cell = " ".join(description.split()).replace("|", "\\|")
        lines.append(f"| `{var}` | {default} | {cell} |\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerfreeze.settings_doc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the page to write (docs/configuration.md)")
    parser.add_argument("--check", action="store_true", help="only check that the page is up to date")
    args = parser.parse_args(argv)
    missing = missing_descriptions()
    if missing:
        print(f"settings without a description (add Field(description=...)): {', '.join(missing)}",
              file=sys.stderr)
        return 1
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
