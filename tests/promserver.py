"""Test helpers: a real Prometheus server (Debian package) on loopback, and small HTTP targets."""
from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from triage.lab.procs import free_port  # noqa: F401  (the tests import it from here)
from triage.lab.prometheus_server import PrometheusServer

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def need_prometheus():
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)")


class Prometheus(PrometheusServer):
    """The project's PrometheusServer, in a test's tmp folder."""

    def __init__(self, tmp: Path, targets: list[str] = (), scrape_interval: str = "1s", storage: Path | None = None):
        need_prometheus()
        super().__init__(targets, scrape_interval, storage, workdir=tmp)


class Target:
    """An HTTP endpoint on loopback answering with ``respond(handler) -> (status, body, headers)``."""

    def __init__(self, respond):
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                outer.requests.append((self.path, dict(self.headers)))
                status, body, headers = respond(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.requests: list = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.address}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
