"""``python -m test_client web`` as a real child process, for the web server's own tests and
the browser tests: it listens on a port of its own choosing (``--port 0``) and says which in
its start line, so there is no race for a free port."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.processes import ServiceProcess

_START_LINE = re.compile(r"serving the demo on (http://\S+/)")


class WebDemoServer:
    """The demo's static web server: ``.url`` (``http://127.0.0.1:PORT/``), ``.port``."""

    def __init__(self, log_dir: Path, *extra_args: str) -> None:
        self.process = ServiceProcess(
            "web-demo", "test_client", ["web", "--host", "127.0.0.1", "--port", "0",
                                        *extra_args],
            log_path=log_dir / "web-demo.log", metrics_port=None)
        self.url = ""

    def start(self, timeout: float = 20.0) -> WebDemoServer:
        self.process.start()
        line = self.process.wait_for_log("serving the demo on ", timeout=timeout)
        found = _START_LINE.search(line)
        if found is None:
            raise AssertionError(f"no URL in the web server's start line: {line!r}")
        self.url = found.group(1)
        return self

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def stop(self) -> None:
        self.process.dispose(timeout=10)
