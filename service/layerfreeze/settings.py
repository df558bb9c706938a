"""Service settings, read from the environment (prefix ``LAYERFREEZE_``) by :func:`get_settings`.

Nothing reads ``os.environ`` anywhere else; the app, the workers and the server receive a ``Settings``
object. The configuration reference lists every field with its default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from layerfreeze.limits import ReadLimits


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


class Settings(BaseSettings, ReadLimits):
    """Every setting; the read limits for untrusted files are inherited from :class:`ReadLimits`."""

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
        """The read limits alone, to hand to the readers (and across to worker processes)."""
        return self.as_limits()


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides taking precedence."""
    return Settings(**overrides)
