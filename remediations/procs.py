"""Child processes that cannot outlive us: on Linux each server we start is told (PR_SET_PDEATHSIG) to get
SIGTERM when triage dies, even by SIGKILL, so an interrupted demo leaves no orphan servers behind."""
from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so `finally` blocks stop what we started."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def wait_ready(proc, url: str, name: str, log: str, timeout_s: float, stop) -> None:
    """Poll ``url`` until it answers 200; a server that exits or stays silent is stopped and reported."""
    import time

    import requests

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}); see {log}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    stop()
    raise RuntimeError(f"{name} did not get ready in {timeout_s:.0f}s; see {log}")


def free_port() -> int:
    """A free TCP port on loopback (servers triage starts bind 127.0.0.1 only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(proc, wait_s: float) -> None:
    """SIGTERM, wait up to ``wait_s``, then SIGKILL: a server is always gone afterwards."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
