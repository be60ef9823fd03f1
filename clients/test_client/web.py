"""``python -m test_client web``: serve the browser demo (``clients/web/``) and the JavaScript
client library (``clients/js/``, at ``/js/``) over plain HTTP, for development and tests.

    python -m test_client web --port 8000
    # then open http://127.0.0.1:8000/?gateway=ws://127.0.0.1:5080/

Why the standard library's ``http.server`` and nothing else: the demo is static files only
(plain HTML and ES modules, no build step), loaded by one developer's browser or by the
browser tests. There is no templating, no API and no load to speak of, so a web framework
or a production server would add a dependency and nothing else. It is not meant to face the
Internet: in production, serve ``clients/web`` and ``clients/js`` from whatever already
serves the game's files (nginx, a CDN).

What it does:

* ``/js/<file>`` is ``clients/js/<file>``; every other path is under ``clients/web/``
  (``/`` is ``clients/web/index.html``). Nothing outside those two directories is ever
  served: ``..`` segments, encoded or not, and symbolic links that lead elsewhere are
  answered 404, and so are directories without an ``index.html`` (no listings).
* ``Content-Type`` is right for what the page loads: ``.js``/``.mjs`` ``text/javascript``
  (browsers refuse ES modules served as anything else), ``.html``, ``.css``, ``.json``,
  ``.map``, ``.svg``, and ``.d.ts`` as ``application/typescript`` (Python's ``mimetypes``
  would say ``video/mp2t`` for ``.ts``). Text types carry ``charset=utf-8``.
* ``Cache-Control: no-store``: an edit shows on the next reload.
* One line on stdout when it listens, with the URL (``--port 0`` picks a free port, and
  that line tells which); requests are logged at DEBUG (``python -m test_client -v web``).
"""

from __future__ import annotations

import http.server
import logging
import os
import signal
import socket
import sys
import urllib.parse
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("test_client.web")

#: ``clients/``: ``clients/web`` and ``clients/js`` beside this package (a source checkout or
#: an editable install; ``--root`` for anything else).
DEFAULT_ROOT = Path(__file__).resolve().parents[1]

#: URL prefix of the JavaScript library.
JS_PREFIX = "/js/"

#: Content types by file name ending, longest ending first.
CONTENT_TYPES: tuple[tuple[str, str], ...] = (
    (".d.ts", "application/typescript; charset=utf-8"),
    (".js", "text/javascript; charset=utf-8"),
    (".mjs", "text/javascript; charset=utf-8"),
    (".html", "text/html; charset=utf-8"),
    (".css", "text/css; charset=utf-8"),
    (".json", "application/json"),
    (".map", "application/json"),
    (".md", "text/markdown; charset=utf-8"),
    (".txt", "text/plain; charset=utf-8"),
    (".svg", "image/svg+xml"),
    (".png", "image/png"),
    (".ico", "image/x-icon"),
)


def content_type(path: str) -> str:
    """The ``Content-Type`` for a file name (``application/octet-stream`` if unknown)."""
    name = path.lower()
    for ending, ctype in CONTENT_TYPES:
        if name.endswith(ending):
            return ctype
    return "application/octet-stream"


def resolve(url_path: str, web_dir: Path, js_dir: Path) -> Path | None:
    """The file a URL path names, or ``None`` when it is outside both directories.

    ``url_path`` is the path part of the request target (query and fragment already cut
    off), still percent-encoded. The answer is a resolved path (symbolic links followed)
    inside ``web_dir`` or ``js_dir``; it may not exist.
    """
    path = urllib.parse.unquote(url_path, errors="strict")
    if "\x00" in path or "\\" in path:
        return None
    if path == JS_PREFIX.rstrip("/") or path.startswith(JS_PREFIX):
        base, rest = js_dir, path[len(JS_PREFIX):]
    else:
        base, rest = web_dir, path
    parts = [part for part in rest.split("/") if part not in ("", ".")]
    if ".." in parts:
        return None
    base = base.resolve()
    candidate = base.joinpath(*parts).resolve() if parts else base
    if candidate != base and base not in candidate.parents:
        return None
    return candidate


class DemoHandler(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of the two directories (set on the server: ``web_dir``, ``js_dir``)."""

    server: DemoServer
    server_version = "gamebackbone-demo"
    protocol_version = "HTTP/1.1"

    def translate_path(self, path: str) -> str:
        url_path = path.split("?", 1)[0].split("#", 1)[0]
        try:
            found = resolve(url_path, self.server.web_dir, self.server.js_dir)
        except UnicodeDecodeError:
            found = None
        if found is None:
            return ""  # send_head() answers 404
        if found.is_dir():
            if not url_path.endswith("/"):
                return str(found)  # SimpleHTTPRequestHandler redirects to the slash
            index = found / "index.html"
            return str(index) if index.is_file() else ""
        return str(found)

    def send_head(self) -> Any:
        if not self.translate_path(self.path):
            self.send_error(http.HTTPStatus.NOT_FOUND, "not found")
            return None
        return super().send_head()

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(http.HTTPStatus.NOT_FOUND, "not found")
        return None

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        return content_type(os.fspath(path))

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class DemoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], web_dir: Path, js_dir: Path) -> None:
        self.web_dir = web_dir
        self.js_dir = js_dir
        if ":" in address[0]:
            self.address_family = socket.AF_INET6  # --host ::1
        super().__init__(address, DemoHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"


def make_server(host: str, port: int, root: Path = DEFAULT_ROOT) -> DemoServer:
    """A server for ``root/web`` and ``root/js`` on ``host:port`` (listening, not serving).

    Raises ``FileNotFoundError`` when ``root/web`` is missing (``root/js`` may be missing:
    ``/js/`` then answers 404, and the page says the library did not load).
    """
    web_dir, js_dir = root / "web", root / "js"
    if not (web_dir / "index.html").is_file():
        raise FileNotFoundError(f"no demo page at {web_dir / 'index.html'}")
    return DemoServer((host, port), web_dir, js_dir)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(host: str, port: int, root: Path = DEFAULT_ROOT) -> int:
    """Serve until SIGTERM or Ctrl-C; the exit code for ``main``."""
    try:
        server = make_server(host, port, root)
    except (OSError, FileNotFoundError) as exc:
        print(f"test_client web: cannot serve on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    print(f"test_client web: serving the demo on {server.url} ({server.web_dir}; /js/ is "
          f"{server.js_dir})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
