#!/usr/bin/env bash
# Build the service image with this host's pip index configuration (docker/pip_index_args.py).
#
#   docker/build-image.sh [TAG] [docker build options...]       # TAG defaults to layerfreeze:latest
#   BASE_IMAGE=layerfreeze-base:bookworm docker/build-image.sh   # on the base of docker/build-local-base.sh
#
# Without BASE_IMAGE the Dockerfile's default (python:3.11-slim) is used. Prints the build time.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-layerfreeze:latest}
shift $(( $# > 0 ? 1 : 0 ))
PYTHON=${PYTHON:-python3}

args=()
while IFS= read -r arg; do
    [ -z "$arg" ] || args+=("$arg")
done < <("$PYTHON" docker/pip_index_args.py)
if [ -n "${BASE_IMAGE:-}" ]; then
    args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

start=$SECONDS
docker build "${args[@]}" "$@" -t "$TAG" .
echo "build-image: $TAG built in $((SECONDS - start)) s," \
    "$(docker image inspect --format '{{.Size}}' "$TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }')" >&2
