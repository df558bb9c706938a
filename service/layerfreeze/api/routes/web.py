"""The web page at ``/`` and its static files at ``/static/{name}``: shipped in the package, no build step.

Every answer here carries a strict Content-Security-Policy: the page runs only its own script and style
files (no inline code, no other origin), talks only to this service, and may not be framed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from layerfreeze.problems import problem

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "web" / "static"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|js|css|svg|txt)$")
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
          "css": "text/css; charset=utf-8", "svg": "image/svg+xml", "txt": "text/plain; charset=utf-8"}

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-cache",
}


def _file(name: str) -> Response:
    match = _NAME.match(name)
    path = STATIC_DIR / name
    if match is None or not path.is_file():
        body = problem(404, "Not found", f"no file {name!r} on this page", f"/static/{name}")
        return Response(json.dumps(body).encode(), status_code=404, media_type="application/problem+json",
                        headers=SECURITY_HEADERS)
    return FileResponse(path, media_type=_TYPES[match.group(1)], headers=SECURITY_HEADERS)


@router.get("/")
def page() -> Response:
    """The web page: load a model, see its module tree, edit a spec with a live preview, run the job."""
    return _file("index.html")


@router.get("/index.html")
def page_by_name() -> Response:
    return RedirectResponse("/", status_code=308, headers=SECURITY_HEADERS)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The page's own scripts, style sheet and icon (a flat folder; nothing else is served)."""
    return _file(name)


__all__ = ["CONTENT_SECURITY_POLICY", "router"]
