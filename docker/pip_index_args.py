"""Print ``docker build`` arguments that give the build this host's pip index configuration.

    python3 docker/pip_index_args.py      # one argument per line: --build-arg, PIP_INDEX_URL=..., ...

pip's own view of its configuration (``pip config list``: its files and PIP_* variables) decides; only
index-url, extra-index-url and trusted-host are passed, and only indexes a build can reach over the
network (http/https: a ``file://`` index on this host is not inside the build). Nothing is printed when pip
uses its default index. The values stay in the Dockerfile's build stage, not in the image.
"""

from __future__ import annotations

import subprocess
import sys

OPTIONS = ("index-url", "extra-index-url", "trusted-host")


def pip_config() -> dict[str, str]:
    """{option: value} as pip resolves it for ``pip install``: environment over [install] over [global]."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    by_key: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            by_key[key.strip()] = value.strip().strip("'\"")
    resolved = {}
    for option in OPTIONS:
        for section in (":env:", "install", "global"):
            if f"{section}.{option}" in by_key:
                resolved[option] = by_key[f"{section}.{option}"]
                break
    return resolved


def build_args(config: dict[str, str]) -> list[str]:
    args = []
    for option in OPTIONS:
        values = config.get(option, "").split()
        if option != "trusted-host":
            skipped = [v for v in values if not v.startswith(("http://", "https://"))]
            for value in skipped:
                print(f"pip_index_args: {option} {value} is not reachable from a build; left out",
                      file=sys.stderr)
            values = [v for v in values if v not in skipped]
        if values:
            args += ["--build-arg", f"PIP_{option.upper().replace('-', '_')}={' '.join(values)}"]
    return args


if __name__ == "__main__":
    print("\n".join(build_args(pip_config())))
