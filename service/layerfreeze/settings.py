"""Service settings, read from the environment (prefix ``LAYERFREEZE_``) by :func:`get_settings`.

Nothing reads ``os.environ`` anywhere else; the app, the workers and the server receive a ``Settings``
object. The README's configuration table lists every field with its default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from layerfreeze.limits import ReadLimits
from layerfreeze.transport import TransportLimits

_DEFAULT_LIMITS = ReadLimits()
_DEFAULT_TRANSPORT = TransportLimits()


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

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("data")
    workers: int = Field(2, ge=1, le=64)
    max_upload_bytes: int = Field(8 * 1024**3, ge=1)  # 8 GiB
    max_form_field_bytes: int = Field(1024**2, ge=1)  # spec / dry_run fields
    job_timeout_s: float = Field(300.0, gt=0)
    worker_memory_mb: int = Field(4096, ge=0)  # RLIMIT_AS per worker; 0 = no limit
    queue_max: int = Field(64, ge=1)  # queued (not yet running) jobs before 429
    retention_s: int = Field(7 * 24 * 3600, ge=0)  # finished jobs kept this long; 0 = forever
    cleanup_interval_s: float = Field(300.0, gt=0)
    tokens: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    wait_max_s: float = Field(60.0, ge=0, le=600)
    log_level: str = "INFO"
    # Transport limits (docs/threat-model.md says what each one protects).
    max_header_bytes: int = Field(_DEFAULT_TRANSPORT.max_header_bytes, ge=1024, le=16 * 1024**2)  # -> 431
    header_timeout_s: float = Field(_DEFAULT_TRANSPORT.header_timeout_s, gt=0, le=3600)  # whole head -> 408
    keepalive_timeout_s: float = Field(5.0, gt=0, le=3600)  # an idle keep-alive connection is closed
    max_connections: int = Field(_DEFAULT_TRANSPORT.max_connections, ge=1)  # lowered to fit the fd limit
    max_uploads_per_tenant: int = Field(8, ge=1)  # uploads being received at once per tenant -> 429
    # Read limits for untrusted files (layerfreeze.limits.ReadLimits).
    max_pickle_bytes: int = Field(_DEFAULT_LIMITS.max_pickle_bytes, ge=1)
    max_pickle_depth: int = Field(_DEFAULT_LIMITS.max_pickle_depth, ge=1)
    max_pickle_stack: int = Field(_DEFAULT_LIMITS.max_pickle_stack, ge=1)
    max_pickle_ops: int = Field(_DEFAULT_LIMITS.max_pickle_ops, ge=1)
    max_zip_entries: int = Field(_DEFAULT_LIMITS.max_zip_entries, ge=1)
    max_zip_ratio: int = Field(_DEFAULT_LIMITS.max_zip_ratio, ge=1)
    max_member_bytes: int = Field(_DEFAULT_LIMITS.max_member_bytes, ge=1)
    max_safetensors_header: int = Field(_DEFAULT_LIMITS.max_safetensors_header, ge=1)
    max_tensors: int = Field(_DEFAULT_LIMITS.max_tensors, ge=1)

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

    def transport_limits(self) -> TransportLimits:
        return TransportLimits(max_header_bytes=self.max_header_bytes, header_timeout_s=self.header_timeout_s,
                               max_connections=self.max_connections)

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
