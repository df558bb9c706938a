# layerfreeze service image. No torch by default: the service reads checkpoints as data and never imports it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LAYERFREEZE_DATA_DIR=/data

WORKDIR /app

# Dependencies first (from pyproject.toml, which pins the fixed python-multipart / starlette floors),
# then the code, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients/python ./clients/python
# Optional: torch (and the client's apply()) inside the image, for checking outputs there. The service
# never needs it. Pass a CPU build: --build-arg TORCH=torch==2.13.0 --build-arg TORCH_INDEX_URL=<an index
# serving CPU wheels>.
ARG TORCH=""
ARG TORCH_INDEX_URL=""
# (versions: the build arg's own, and the local client package)
# hadolint ignore=DL3013
RUN if [ -n "$TORCH" ]; then \
        pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "$TORCH" ./clients/python; \
    fi
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 layerfreeze \
    && useradd --system --uid 10001 --gid layerfreeze --home-dir /app --shell /usr/sbin/nologin layerfreeze \
    && mkdir -p /data \
    && chown layerfreeze:layerfreeze /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Inside a container the service must listen on all interfaces; publish the port deliberately.
CMD ["layerfreeze", "serve", "--host", "0.0.0.0", "--port", "8000"]
