"""Service settings, read from the environment (prefix ``LAYERFREEZE_``) by :func:`get_settings`.

Nothing reads ``os.environ`` anywhere else; the app, the workers and the server receive a ``Settings``
object. ``docs/configuration.md`` is generated from these fields (``python -m layerfreeze.settings_doc``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from layerfreeze.limits import ReadLimits

_DEFAULT_LIMITS = ReadLimits()


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAYERFREEZE_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description=(
        "Interface to listen on. Keep the loopback default unless you mean otherwise, and set `tokens` "
        "before listening on a public interface. `layerfreeze serve --host` overrides it."))
    port: int = Field(8000, ge=0, le=65535, description=(
        "Port to listen on. `layerfreeze serve --port` overrides it."))
    data_dir: Path = Field(Path("data"), description=(
        "Job database (`jobs.sqlite3`) and files (`jobs/<id>/`, `tmp/`); relative to the working directory."))
    workers: int = Field(2, ge=1, le=64, description="Worker processes that run jobs (1-64).")
    max_upload_bytes: int = Field(8 * 1024**3, ge=1, description=(
        "Largest model file accepted (413 above: refused from `Content-Length` before reading, "
        "or while streaming)."))
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
    # Read limits for untrusted files (layerfreeze.limits.ReadLimits).
    max_pickle_bytes: int = Field(_DEFAULT_LIMITS.max_pickle_bytes, ge=1, description=(
        "Largest pickle stream read (one `data.pkl` or legacy `torch.save` stream)."))
    max_pickle_depth: int = Field(_DEFAULT_LIMITS.max_pickle_depth, ge=1, description=(
        "Nesting (MARKs and containers, including nesting built through the memo) in the symbolic "
        "pickle reader."))
    max_pickle_stack: int = Field(_DEFAULT_LIMITS.max_pickle_stack, ge=1, description=(
        "Values waiting on the pickle stack (Python's pickler batches containers by 1,000, so real "
        "files stay far below it)."))
    max_pickle_ops: int = Field(_DEFAULT_LIMITS.max_pickle_ops, ge=1, description=(
        "Opcodes in one pickle stream: about 30 per tensor, and 1-2 µs each, so it is also the CPU "
        "bound per upload. Raise it for checkpoints with over ~300,000 tensors."))
    max_zip_entries: int = Field(_DEFAULT_LIMITS.max_zip_entries, ge=1, description=(
        "Members of a zip archive. `torch.save` writes one per storage: raise it for checkpoints "
        "with more tensors."))
    max_zip_ratio: int = Field(_DEFAULT_LIMITS.max_zip_ratio, ge=1, description=(
        "Declared size / compressed size of a deflated zip member."))
    max_member_bytes: int = Field(_DEFAULT_LIMITS.max_member_bytes, ge=1, description=(
        "Uncompressed size of a zip member that is decompressed (`code/`, pickles)."))
    max_safetensors_header: int = Field(_DEFAULT_LIMITS.max_safetensors_header, ge=1, description=(
        "Bytes of a safetensors header, as the reference reader caps it."))
    max_tensors: int = Field(_DEFAULT_LIMITS.max_tensors, ge=1, description="Tensors in one checkpoint.")

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> dict[str, str]:
        return parse_tokens(value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return level

    def read_limits(self) -> ReadLimits:
        return ReadLimits(
            max_pickle_bytes=self.max_pickle_bytes,
            max_pickle_depth=self.max_pickle_depth,
            max_pickle_stack=self.max_pickle_stack,
            max_pickle_ops=self.max_pickle_ops,
            max_zip_entries=self.max_zip_entries,
            max_zip_ratio=self.max_zip_ratio,
            max_member_bytes=self.max_member_bytes,
            max_safetensors_header=self.max_safetensors_header,
            max_tensors=self.max_tensors,
        )


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides taking precedence."""
    return Settings(**overrides)
