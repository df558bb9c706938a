"""``serve(host, port)``: run the service under uvicorn (uvloop + httptools), as ``layerfreeze serve`` does.

The httptools protocol is wrapped by ``layerfreeze.transport`` for the head size, head timeout and
connection limits; the keep-alive timeout is uvicorn's own.

    python -m layerfreeze.server [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from layerfreeze.errors import InvalidSettings, PortInUse, StartupError
from layerfreeze.settings import Settings, get_settings
from layerfreeze.storage import lock as data_dir_lock


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
    several). Values of secret settings (tokens, the database URL) are not repeated."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        if not field:  # a rule over several settings: its message names them
            parts.append(error["msg"].removeprefix("Value error, "))
            continue
        name = f"--{field.replace('_', '-')}" if field in overrides else prefix + field.upper()
        value = "" if "token" in field or field == "database_url" else f"={_short(error.get('input'))}"
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
    from layerfreeze.transport import connection_cap, guarded_protocol

    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if settings is None:
        settings = load_settings(**overrides)
    elif overrides:
        settings = settings.model_copy(update=overrides)
    configure_logging(settings.log_level)
    if settings.distributed:
        require_distributed()
    if settings.database_url:
        upgrade_database(settings.database_url)
    # Before uvicorn starts the app (whose start-up recovers the data directory): one service per
    # directory, and a port in use is a clear error, not a traceback after the recovery already ran.
    # In the distributed mode replicas share the directory by design, and none recovers it at start.
    data_dir = (None if settings.distributed
                else data_dir_lock.acquire(settings.data_dir, f"{settings.host}:{settings.port}"))
    try:
        sock = listen_socket(settings.host, settings.port)
    except BaseException:
        if data_dir is not None:
            data_dir_lock.release(data_dir)
        raise
    limits = settings.transport_limits()
    cap = connection_cap(limits.max_connections)
    if cap < limits.max_connections:
        logging.getLogger("layerfreeze.transport").warning(
            "max_connections lowered from %d to %d to fit the file descriptor limit",
            limits.max_connections, cap)
        limits = limits.model_copy(update={"max_connections": cap})
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, loop="uvloop",
        http=guarded_protocol(limits), timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        log_config=None, access_log=False, server_header=False, timeout_graceful_shutdown=10,
    )
    logging.getLogger("layerfreeze").info("listening on http://%s:%d", *sock.getsockname()[:2])
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if data_dir is not None:
            data_dir_lock.release(data_dir)


def require_distributed() -> None:
    """The distributed mode's packages are installed, or one line saying how to install them."""
    try:
        import celery  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise InvalidSettings(f"LAYERFREEZE_QUEUE=celery needs the 'distributed' extra ({exc}): "
                              "pip install 'layerfreeze[distributed]'") from None


def upgrade_database(url: str) -> None:
    """PostgreSQL's schema up to date before anything starts (``layerfreeze migrate``); an unreachable
    database or a failed upgrade is a start-up error with one line, not a traceback."""
    from layerfreeze.errors import StoreError
    from layerfreeze.storage.db import Database
    from layerfreeze.storage.schema import upgrade

    try:
        db = Database.postgres(url)
        try:
            upgrade(db)
        finally:
            db.close()
    except StoreError as exc:
        raise StartupError(exc.detail) from None


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (uvicorn listens on it); PortInUse naming LAYERFREEZE_PORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is fine
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        raise PortInUse(f"{host}:{port} {why}: stop what listens there, or choose another port with "
                        "LAYERFREEZE_PORT (or --port); LAYERFREEZE_HOST sets the interface",
                        host=host, port=port) from None
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="layerfreeze-server", description=__doc__)
    parser.add_argument("--host", default=None, help="interface (default: LAYERFREEZE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: LAYERFREEZE_PORT or 8000)")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port)
    except StartupError as exc:
        from layerfreeze.cli.exit_codes import exit_code_for

        print(f"layerfreeze-server: error: {exc.detail}", file=sys.stderr)
        raise SystemExit(exit_code_for(exc)) from None  # the codes of `layerfreeze serve` (78: a setting)


if __name__ == "__main__":
    main()
