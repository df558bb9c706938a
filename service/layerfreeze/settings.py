"""Service settings, read from the environment (prefix ``LAYERFREEZE_``) by :func:`get_settings`.

Nothing reads ``os.environ`` anywhere else; the app, the workers and the server receive a ``Settings``
object. ``docs/configuration.md`` is generated from these fields (``python -m layerfreeze.settings_doc``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from layerfreeze.limits import ReadLimits
from layerfreeze.transport import TransportLimits


def parse_tokens(value: Any) -> dict[str, str]:
    """``token1:alice,token2:bob`` or a JSON object ``{"token1": "alice"}`` -> {token: tenant}."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        pairs = value
    else:
        text = str(value).strip()
        if text.startswith("{"):
            pairs = json.loads(text)
            if not isinstance(pairs, dict):
                raise ValueError("tokens JSON must be an object of token -> tenant")
        else:
            pairs = {}
            for item in text.split(","):
                item = item.strip()
                if not item:
                    continue
                token, sep, tenant = item.partition(":")
                if not sep or not token.strip() or not tenant.strip():
                    raise ValueError("tokens must look like 'token1:tenant1,token2:tenant2'")
                pairs[token.strip()] = tenant.strip()
    out = {str(k): str(v) for k, v in pairs.items()}
    if any(not k or not v for k, v in out.items()):
        raise ValueError("tokens and tenant names must be non-empty")
    return out


class Settings(BaseSettings, ReadLimits, TransportLimits):
    """Every setting; the read limits for untrusted files and the connection limits are inherited from
    :class:`ReadLimits` and :class:`TransportLimits`, their one definition."""

    model_config = SettingsConfigDict(env_prefix="LAYERFREEZE_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description=(
        "Interface to listen on. Keep the loopback default unless you mean otherwise, and set `tokens` "
        "before listening on a public interface. `layerfreeze serve --host` overrides it."))
    port: int = Field(8000, ge=0, le=65535, description=(
        "Port to listen on. `layerfreeze serve --port` overrides it."))
    data_dir: Path = Field(Path("data"), description=(
        "Job database (`jobs.sqlite3`) and files (`jobs/<id>/`, `tmp/`); relative to the working directory."))
    database_url: str = Field("", description=(
        "Where job and model records live. Empty: the SQLite file `jobs.sqlite3` in the data directory "
        "(one service per directory). `postgresql://user:password@host:5432/dbname`: that PostgreSQL "
        "database (needs the `distributed` extra), shared by every replica; its schema is upgraded at "
        "start-up (and by `layerfreeze migrate`). Options such as `?sslmode=require` are passed on."))
    workers: int = Field(2, ge=1, le=64, description=(
        "Worker processes that run jobs (1-64): of the service, or in the distributed mode of each "
        "`layerfreeze worker`."))
    max_upload_bytes: int = Field(8 * 1024**3, ge=1, description=(
        "Largest model file accepted (413 above: refused from `Content-Length` before reading, "
        "or while streaming)."))
    max_model_files: int = Field(256, ge=1, le=100_000, description=(
        "Most files one model upload may carry (a model directory's `file` parts: index, shards, config, "
        "tokenizer, ...); 413 above. Their total size is bounded by `max_upload_bytes`."))
    max_form_field_bytes: int = Field(1024**2, ge=1, description=(
        "Largest `spec` or `dry_run` form field of an upload (413 above)."))
    job_timeout_s: float = Field(300.0, gt=0, description=(
        "Run time of one job in seconds; the worker is killed past it and the job fails "
        "(`job-time-limit`, 422)."))
    worker_memory_mb: int = Field(4096, ge=0, description=(
        "Address-space limit (`RLIMIT_AS`) of each worker process in MiB; a job that needs more fails "
        "(`job-memory-limit`, 422). 0 = no limit."))
    queue_max: int = Field(64, ge=1, description=(
        "Jobs waiting for a worker (queued, not yet running) before new ones get 429 with `Retry-After`."))
    retention_s: int = Field(7 * 24 * 3600, ge=0, description=(
        "Finished jobs older than this many seconds are deleted with their files; 0 = keep them forever."))
    cleanup_interval_s: float = Field(300.0, gt=0, description="How often retention runs, in seconds.")
    tokens: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict, description=(
        "Bearer tokens and their tenants: `token1:tenant1,token2:tenant2` or a JSON object "
        "`{\"token\": \"tenant\"}`. Empty = no auth, every caller shares one space."))
    wait_max_s: float = Field(60.0, ge=0, le=600, description=(
        "Upper bound in seconds for `?wait=` on `POST /v1/jobs`: longer waits are clamped to it, "
        "and to 60 s whatever it says."))
    log_level: str = Field("INFO", description=(
        "`DEBUG`, `INFO`, `WARNING` or `ERROR`. Logs are JSON on stderr, one object per line, "
        "with the `request_id` of the request being served."))
    keepalive_timeout_s: float = Field(5.0, gt=0, le=3600, description=(
        "An idle keep-alive connection is closed after this many seconds (uvicorn's own timeout)."))
    max_uploads_per_tenant: int = Field(8, ge=1, description=(
        "Uploads one tenant may have under way at once (429 with `Retry-After` above); without tokens, "
        "each client address counts as a tenant."))
    accel_redirect: str = Field("", description=(
        "Behind nginx: the internal location prefix that maps to the data directory, e.g. "
        "`/_layerfreeze/data/` (see `deploy/nginx/`). A GET of a download that is one stored file byte for "
        "byte is then answered with `X-Accel-Redirect` after the usual checks and headers, and nginx sends "
        "the bytes (sendfile, byte ranges); computed downloads (patched outputs, tar archives) still stream "
        "through the service. Set it only when every request comes through that proxy: a client that "
        "reaches the service directly would get an empty body. Empty = off."))

    queue: Literal["local", "celery"] = Field("local", description=(
        "What runs jobs: `local` (worker processes of this service, the embedded default) or `celery` "
        "(the distributed mode: jobs go through `broker_url` to `layerfreeze worker` processes on any "
        "host, and every API replica is stateless; see docs/distributed.md)."))
    broker_url: str = Field("", description=(
        "The Celery broker when `queue` is `celery`: `redis://host:6379/0`."))
    broker_visibility_timeout_s: float = Field(0.0, ge=0, description=(
        "Seconds after which a job message that a worker took but never acknowledged (its host was "
        "lost) is delivered again; 0 = `job_timeout_s` + 60. It must exceed `job_timeout_s`, so that a "
        "job that is still running is never delivered twice."))
    job_attempts: int = Field(2, ge=1, le=10, description=(
        "Distributed mode: how many times a job is started when the worker running it is lost; past "
        "that it fails with `worker-lost`. A job that fails on its own (bad file, time or memory limit) "
        "is never retried."))
    read_workers: int = Field(1, ge=1, le=64, description=(
        "Distributed mode: processes of each API replica that read uploaded models while the upload's "
        "request waits (`POST /v1/models`); jobs run on the workers."))

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> dict[str, str]:
        return parse_tokens(value)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip()
        scheme, sep, rest = value.partition("://")
        if value and (scheme not in ("postgresql", "postgres", "postgresql+psycopg") or not sep or not rest):
            raise ValueError("database_url must be empty (SQLite in the data directory) or "
                             "postgresql://user:password@host:port/dbname")
        return value

    @field_validator("accel_redirect")
    @classmethod
    def _accel(cls, value: str) -> str:
        if value and (not re.fullmatch(r"/(?:[A-Za-z0-9._~-]+/)+", value) or "/../" in value):
            raise ValueError("accel_redirect must be empty or a URI path prefix such as /_layerfreeze/data/ "
                             "(letters, digits, '._~-', starting and ending with '/')")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return level

    @model_validator(mode="after")
    def _distributed(self) -> Settings:
        if self.queue == "celery":
            if not self.broker_url.startswith(("redis://", "rediss://")):
                raise ValueError("queue=celery needs LAYERFREEZE_BROKER_URL=redis://host:6379/0")
            if not self.database_url:  # the SQLite file is one host's: replicas need a shared database
                raise ValueError("queue=celery needs LAYERFREEZE_DATABASE_URL=postgresql://user:password@"
                                 "host:5432/dbname (every replica and worker shares the records)")
            if self.visibility_timeout_s() <= self.job_timeout_s:
                raise ValueError("broker_visibility_timeout_s must exceed job_timeout_s")
        return self

    @property
    def distributed(self) -> bool:
        return self.queue == "celery"

    def visibility_timeout_s(self) -> float:
        return self.broker_visibility_timeout_s or self.job_timeout_s + 60.0

    def job_lease_s(self) -> float:
        """How long a running attempt may live: its time limit and half the margin before redelivery. A
        job found running past it belongs to a lost worker."""
        vt = self.visibility_timeout_s()
        return self.job_timeout_s + max(0.0, vt - self.job_timeout_s) / 2

    def transport_limits(self) -> TransportLimits:
        return TransportLimits(**{name: getattr(self, name) for name in TransportLimits.model_fields})

    def read_limits(self) -> ReadLimits:
        """The read limits alone, to hand to the readers (and across to worker processes)."""
        return self.as_limits()


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides taking precedence."""
    return Settings(**overrides)
