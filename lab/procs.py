"""Child processes that cannot outlive us.

Each server triage starts runs in its own session (``start_new_session=True``: no ``preexec_fn``, which the
subprocess documentation calls unsafe when threads run, as they do in triage), so the terminal's signals reach
triage alone, and ``terminate`` stops the server's whole process group (Triton's backend stubs, TorchServe's
Java frontend and workers). On Linux it is also told to get SIGTERM when triage dies, even by SIGKILL
(PR_SET_PDEATHSIG, set by util-linux ``setpriv --pdeathsig`` just before it execs the server), so a killed
triage leaves no orphan servers behind."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from triage import lifecycle

HURRY_S = 0.3  # how long a server gets to stop by itself once triage itself was told to stop (hang-up, SIGTERM)


def hurry(on: bool = True) -> None:
    """Triage was told to stop (its terminal went away, SIGHUP, SIGTERM): from now on ``terminate`` gives each
    server ``HURRY_S`` before SIGKILL instead of its full graceful stop (Triton's alone takes ~3 s), so the
    command is gone within the 2 s a hang-up allows. Servers that leave shared memory behind when killed name
    it with a prefix of ours and remove it in their ``stop()`` (Triton's Python backend)."""
    if on:
        lifecycle.hurry_servers.set()
    else:
        lifecycle.hurry_servers.clear()


def popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for a server: its own session, and (where ``setpriv`` exists) SIGTERM when we die."""
    setpriv = shutil.which("setpriv")
    if setpriv and os.uname().sysname == "Linux":
        cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    proc._triage_group = True  # its pid is its process group's id: terminate() stops the whole group
    return proc


def wait_ready(proc, url: str, name: str, log: str, timeout_s: float, stop) -> None:
    """Poll ``url`` until it answers 200. A server that exits or stays silent is stopped (``stop()``, which
    removes its folder) and reported with the last lines of its log."""
    import requests

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            why = f"{name} exited ({proc.returncode})"
            break
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    else:
        why = f"{name} did not get ready in {timeout_s:.0f}s"
    tail = log_tail(log)
    stop()
    raise RuntimeError(f"{why}; the end of its log:\n{tail}" if tail else why)


def log_tail(path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    """A free TCP port on loopback (servers triage starts bind 127.0.0.1 only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(proc, wait_s: float) -> None:
    """SIGTERM to the server's process group, wait up to ``wait_s``, then SIGKILL: the server, and what it
    started in its group, are gone afterwards."""
    if proc is None:
        return
    if lifecycle.hurry_servers.is_set():
        wait_s = min(wait_s, HURRY_S)
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(10)
    end = time.monotonic() + wait_s  # the group's other members (the leader's children) follow it out
    while _group_alive(proc) and time.monotonic() < end:
        time.sleep(0.05)
    if _group_alive(proc):
        _signal_group(proc, signal.SIGKILL)


def _signal_group(proc, sig) -> None:
    try:
        if getattr(proc, "_triage_group", False):
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _group_alive(proc) -> bool:
    if not getattr(proc, "_triage_group", False):
        return False
    try:
        os.killpg(proc.pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


class Server:
    """What the servers triage starts share (Triton, vLLM, TorchServe): ``stop()`` ends the process group,
    closes the log, removes the private folder; a context manager that starts and stops. Subclasses set
    ``proc``, ``workdir``, ``_log`` and may clean more in ``_after_stop``."""
    STOP_S = 30.0

    def _after_stop(self) -> None:
        pass

    def stop(self) -> None:
        terminate(self.proc, self.STOP_S)
        self._after_stop()
        if getattr(self, "_log", None):
            self._log.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
