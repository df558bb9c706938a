"""``serve(host, port)``: run the service under uvicorn (uvloop + httptools), as ``layerfreeze serve`` does.

The httptools protocol is wrapped by ``layerfreeze.transport`` for the head size, head timeout and
connection limits; the keep-alive timeout is uvicorn's own.

    python -m layerfreeze.server [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from layerfreeze.settings import Settings, get_settings


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
        settings = get_settings(**overrides)
    elif overrides:
        settings = settings.model_copy(update=overrides)
    configure_logging(settings.log_level)
    limits = settings.transport_limits()
    cap = connection_cap(limits.max_connections)
    if cap < limits.max_connections:
        logging.getLogger("layerfreeze.transport").warning(
            "max_connections lowered from %d to %d to fit the file descriptor limit",
            limits.max_connections, cap)
        limits = dataclasses.replace(limits, max_connections=cap)
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, loop="uvloop",
        http=guarded_protocol(limits), timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        log_config=None, access_log=False, server_header=False, timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="layerfreeze-server", description=__doc__)
    parser.add_argument("--host", default=None, help="interface (default: LAYERFREEZE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: LAYERFREEZE_PORT or 8000)")
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
