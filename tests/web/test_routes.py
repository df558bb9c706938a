"""The page's routes over HTTP: what they serve, and the headers that lock the page down."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
import pytest

pytestmark = pytest.mark.server


class _Inline(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, style elements and attributes, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.blocked.append("inline <script>")
        if tag == "style":
            self.blocked.append("<style>")
        self.blocked += [f"{tag} {k}=" for k in names if k == "style" or k.startswith("on")]
        for key in ("src", "href"):
            value = names.get(key)
            if value and value.startswith("/static/"):
                self.sources.append(value)
            elif value and "//" in value:
                self.blocked.append(f"{tag} {key}={value} (another origin)")


def test_page_and_files_carry_a_strict_policy(service_url: str) -> None:
    page = httpx.get(f"{service_url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                      "frame-ancestors 'none'", "base-uri 'none'"):
        assert directive in policy
    assert "unsafe" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"

    parser = _Inline()
    parser.feed(page.text)
    assert parser.blocked == []
    assert {"/static/app.js", "/static/app.css", "/static/icon.svg"} <= set(parser.sources)
    for name, kind in (("app.js", "text/javascript"), ("api.js", "text/javascript"),
                       ("tree.js", "text/javascript"), ("spec.js", "text/javascript"),
                       ("app.css", "text/css"), ("icon.svg", "image/svg+xml")):
        answer = httpx.get(f"{service_url}/static/{name}", timeout=10)
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].startswith(kind)
        assert answer.headers["content-security-policy"] == policy
        assert answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["nothing.js", "..%2Fapi%2Fapp.py", "%2E%2E%2F__init__.py", "app.py",
                                  ".hidden.js", "sub%2Fdir.js"])
def test_nothing_else_is_served(service_url: str, name: str) -> None:
    answer = httpx.get(f"{service_url}/static/{name}", timeout=10)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


def test_the_api_keeps_its_own_answers(service_url: str) -> None:
    """The page is added beside the API, which still answers JSON and problem+json at its own paths."""
    assert httpx.get(f"{service_url}/healthz", timeout=10).json() == {"status": "ok"}
    missing = httpx.get(f"{service_url}/v1/jobs/nope", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "/" not in {p for p in httpx.get(f"{service_url}/openapi.json", timeout=10).json()["paths"]}
