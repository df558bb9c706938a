# layerfreeze service image. No torch by default: the service reads checkpoints as data and never imports it.
#
#   docker build -t layerfreeze .                      # on python:3.11-slim
#   docker build --build-arg BASE_IMAGE=layerfreeze-base:bookworm -t layerfreeze .
#                                                      # on the base of docker/build-local-base.sh
#
# The base is any Debian-like image with python3 (3.11+: tomllib) and its venv module: the official python
# image or Debian 12's own python3. Both stages use that one base; the service lives in a venv at
# /opt/layerfreeze. docker/build-image.sh passes the host's pip index configuration; docs/docker.md.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build

# Where pip finds packages, when the default index is not the one to use: given at build time from the
# host's pip configuration (docker/build-image.sh does), used only in this stage, absent from the image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them: the
# service's, and those of the `distributed` extra (Celery on Redis, PostgreSQL), so that one image runs
# `layerfreeze serve`, `worker` and `migrate` in either mode (compose.yaml).
COPY pyproject.toml README.md ./
RUN python3 -m venv /opt/layerfreeze \
    && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p.get('optional-dependencies', {}).get('distributed', [])))" > requirements.txt \
    && /opt/layerfreeze/bin/pip install --no-cache-dir -r requirements.txt

COPY service ./service
COPY clients/python ./clients/python
RUN /opt/layerfreeze/bin/pip install --no-cache-dir --no-deps .

# Optional: torch (and the client's apply()) inside the image, for checking outputs there. The service
# never needs it. Pass a CPU build: --build-arg TORCH=torch==2.13.0 --build-arg TORCH_INDEX_URL=<an index
# serving CPU wheels>. Then pip and setuptools leave the venv: the service does not use them (a third of it).
ARG TORCH=""
ARG TORCH_INDEX_URL=""
# (versions: the build arg's own, and the local client package)
# hadolint ignore=DL3013
RUN if [ -n "$TORCH" ]; then \
        /opt/layerfreeze/bin/pip install --no-cache-dir \
            ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "$TORCH" ./clients/python; \
    fi \
    && /opt/layerfreeze/bin/python -m pip uninstall --yes --quiet pip setuptools


FROM ${BASE_IMAGE}

ENV PATH=/opt/layerfreeze/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LAYERFREEZE_HOST=0.0.0.0 \
    LAYERFREEZE_PORT=8000 \
    LAYERFREEZE_DATA_DIR=/data

RUN groupadd --gid 10001 layerfreeze \
    && useradd --uid 10001 --gid layerfreeze --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin layerfreeze \
    && mkdir -p /data \
    && chown layerfreeze:layerfreeze /data
COPY --from=build /opt/layerfreeze /opt/layerfreeze

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

# Healthy = ready to take jobs: workers alive, job database and data directory writable (/readyz).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; port = os.environ.get('LAYERFREEZE_PORT', '8000'); sys.exit(u.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=4).status != 200)"]

# Listens on LAYERFREEZE_HOST:LAYERFREEZE_PORT (0.0.0.0:8000 here); publish the port deliberately.
CMD ["layerfreeze", "serve"]
