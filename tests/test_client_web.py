"""``python -m test_client web``, the demo's static web server, as a real process over real
HTTP: the page at ``/``, the library at ``/js/``, the right ``Content-Type`` for each, and
nothing outside ``clients/web`` and ``clients/js`` however the path is spelt. (The page
itself, in a real browser: tests/test_browser_demo.py.)"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_client.web import content_type, resolve
from tests.support.cli import run_cli
from tests.support.processes import REPO_ROOT
from tests.support.web_demo import WebDemoServer

CLIENTS = REPO_ROOT / "clients"


def fetch(server: WebDemoServer, path: str, method: str = "GET"
          ) -> tuple[int, dict[str, str], bytes]:
    """One raw request: the path is sent exactly as given (no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the two directories, plus files beside them that must never be served and a
    symbolic link that leads out (the real tree cannot hold those)."""
    root = tmp_path_factory.mktemp("web-root")
    (root / "web").mkdir()
    (root / "web" / "index.html").write_text("<!doctype html><title>demo</title>\n")
    (root / "web" / "demo.css").write_text("body {}\n")
    (root / "web" / "sub").mkdir()
    (root / "web" / "sub" / "page.html").write_text("<p>sub</p>\n")
    (root / "web" / "empty").mkdir()
    (root / "js").mkdir()
    (root / "js" / "gamebackbone.js").write_text("export const x = 1;\n")
    (root / "js" / "gamebackbone.d.ts").write_text("export declare const x: number;\n")
    (root / "secret.txt").write_text("not for the web\n")
    (root / "web" / "leak").symlink_to(root / "secret.txt")
    yield root


@pytest.fixture(scope="module")
def server(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDemoServer]:
    web = WebDemoServer(tmp_path_factory.mktemp("web-log"), "--root", str(site)).start()
    try:
        yield web
    finally:
        web.stop()


def test_the_page_and_the_library_with_their_content_types(server: WebDemoServer) -> None:
    status, headers, body = fetch(server, "/")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    for path, expected in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/demo.css", "text/css; charset=utf-8"),
        ("/js/gamebackbone.js", "text/javascript; charset=utf-8"),
        ("/js/gamebackbone.d.ts", "application/typescript; charset=utf-8"),
        ("/js/gamebackbone.js?v=2", "text/javascript; charset=utf-8"),
        ("/sub/page.html", "text/html; charset=utf-8"),
    ]:
        status, headers, _ = fetch(server, path)
        assert (status, headers["content-type"]) == (200, expected), path
    status, headers, body = fetch(server, "/js/gamebackbone.js", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/js/../../secret.txt", "/%2e%2e/secret.txt", "/js/%2E%2E/%2e%2e/secret.txt",
    "/..%2fsecret.txt", "/js/..%2f..%2fsecret.txt", "/leak", "/%00", "/..\\secret.txt",
    "/%ff", "/sub/../../secret.txt", "//etc/passwd", "/js/../web/../secret.txt",
])
def test_nothing_outside_the_two_directories(server: WebDemoServer, path: str) -> None:
    status, _, body = fetch(server, path)
    assert status == 404, (path, status, body[:200])
    assert b"not for the web" not in body


def test_no_directory_listings(server: WebDemoServer) -> None:
    assert fetch(server, "/empty/")[0] == 404
    assert fetch(server, "/js/")[0] == 404
    status, headers, _ = fetch(server, "/sub")
    assert status == 301 and headers["location"] == "/sub/"


def test_the_real_tree_is_served_by_default(tmp_path: Path) -> None:
    """Without --root: this checkout's clients/web, and clients/js at /js/ once it exists."""
    web = WebDemoServer(tmp_path).start()
    try:
        status, headers, body = fetch(web, "/")
        assert status == 200 and b'src="demo.js"' in body
        status, headers, body = fetch(web, "/demo.js")
        assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
        assert b'from "/js/gamebackbone.js"' in body
        if (CLIENTS / "js" / "gamebackbone.js").is_file():
            status, headers, _ = fetch(web, "/js/gamebackbone.js")
            assert status == 200 and headers["content-type"].startswith("text/javascript")
    finally:
        web.stop()


def test_resolve_and_content_type_directly(site: Path) -> None:
    web, js = site / "web", site / "js"
    assert resolve("/", web, js) == web.resolve()
    assert resolve("/js/gamebackbone.js", web, js) == (js / "gamebackbone.js").resolve()
    assert resolve("/jsx/a.js", web, js) == (web / "jsx" / "a.js").resolve()
    assert resolve("/%2e%2e/x", web, js) is None
    assert resolve("/leak", web, js) is None  # the link leads out
    assert content_type("a.D.TS") == "application/typescript; charset=utf-8"
    assert content_type("a.ts") == "application/octet-stream"
    assert content_type("x.mjs") == "text/javascript; charset=utf-8"


def test_a_missing_page_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("web", "--port", "0", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "no demo page at" in result.stderr and str(tmp_path) in result.stderr
