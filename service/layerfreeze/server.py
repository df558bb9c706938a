"""``serve(host, port)``: run the service under uvicorn (uvloop + httptools), as ``layerfreeze serve`` does.

    python -m layerfreeze.server [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from layerfreeze.errors import LayerfreezeError
from layerfreeze.settings import Settings, get_settings


class InvalidSettings(LayerfreezeError):
    """A setting (environment variable or command-line option) has a value the service cannot use."""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and ``overrides``; a bad value raises :class:`InvalidSettings` with one
    line that names the setting, instead of pydantic's multi-line report."""
    try:
        return get_settings(**overrides)
    except ValidationError as exc:
        raise InvalidSettings(describe_invalid(exc, overrides)) from None
    except SettingsError as exc:
        raise InvalidSettings(f"invalid setting: {exc}") from None


def describe_invalid(exc: ValidationError, overrides: Mapping[str, Any]) -> str:
    """``invalid setting LAYERFREEZE_WORKERS='abc': Input should be a valid integer, ...`` (``; `` between
    several). Values of secret settings (tokens) are not repeated."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"--{field.replace('_', '-')}" if field in overrides else prefix + field.upper()
        value = "" if "token" in field else f"={_short(error.get('input'))}"
        parts.append(f"{name}{value}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid setting " + "; ".join(parts)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def serve(host: str | None = None, port: int | None = None, settings: Settings | None = None,
          **overrides: Any) -> None:
    """Serve until interrupted. ``host``/``port`` override the settings (default 127.0.0.1:8000)."""
    # Imported here: worker processes import this module as their __main__ and need none of it.
    import uvicorn

    from layerfreeze.api.app import create_app
    from layerfreeze.logs import configure_logging

    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if settings is None:
        settings = load_settings(**overrides)
    elif overrides:
        settings = settings.model_copy(update=overrides)
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, loop="uvloop", http="httptools",
        log_config=None, access_log=False, server_header=False, timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=64 * 1024,
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="layerfreeze-server", description=__doc__)
    parser.add_argument("--host", default=None, help="interface (default: LAYERFREEZE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: LAYERFREEZE_PORT or 8000)")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port)
    except InvalidSettings as exc:
        print(f"layerfreeze-server: error: {exc.detail}", file=sys.stderr)
        raise SystemExit(78) from None  # sysexits EX_CONFIG, as `layerfreeze serve`


if __name__ == "__main__":
    main()
