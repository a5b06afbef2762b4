"""A private Prometheus (the Debian package's binary) on loopback: its own config, storage and port;
``stop()`` stops it and removes the folder it made (one given as ``workdir`` is left to its owner). Used by
`triage demo` to scrape Triton, and by the tests."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from . import procs
from .procs import free_port, wait_ready


def binary() -> str | None:
    return shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)


class PrometheusServer:
    def __init__(self, targets: list[str] = (), scrape_interval: str = "1s", storage: Path | None = None,
                 workdir: Path | None = None):
        exe = binary()
        if exe is None:
            raise RuntimeError("prometheus is not installed (Debian package 'prometheus')")
        self._made = workdir is None  # a folder we made is ours to remove
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="triage-prometheus-"))
        self.proc = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = self.workdir / "prometheus.yml"
        jobs = "".join(f"  - job_name: t{i}\n    static_configs:\n      - targets: ['{t}']\n"
                       for i, t in enumerate(targets))
        cfg.write_text(f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
                       f"scrape_configs:\n{jobs}" if targets else "global:\n  scrape_interval: 15s\n")
        self.storage = storage or self.workdir / "data"
        self.log = open(self.workdir / "prometheus.log", "wb")
        self.proc = procs.popen(
            [exe, f"--config.file={cfg}", f"--storage.tsdb.path={self.storage}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=30d"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        wait_ready(self.proc, f"{self.url}/-/ready", "prometheus", self.log.name, timeout, self.stop)

    def wait_for_series(self, metric: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = requests.get(f"{self.url}/api/v1/query", params={"query": f"count({metric})"}, timeout=2).json()
            if r["data"]["result"]:
                return
            time.sleep(0.5)
        raise RuntimeError(f"no {metric} scraped in {timeout}s")

    def stop(self) -> None:
        procs.terminate(self.proc, 10)
        self.log.close()
        if self._made:
            shutil.rmtree(self.workdir, ignore_errors=True)
