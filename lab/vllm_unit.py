"""The lab's vLLM serving unit: a small supervisor that plays the part a systemd unit or a Deployment plays in
production. It reads the engine arguments from an arguments file (``remediations/engine_args.py``'s format),
runs the lab's real vLLM (``vllm_server.VLLM``) with them on a fixed port, and on SIGUSR1 stops it and starts
it again with the file read afresh. triage's engine-settings remediation restarts it through an argv
(``python -m triage.lab.vllm_unit restart --state DIR``), exactly as it would run ``systemctl restart vllm``.

``serve`` writes its pid and a ``generation`` counter (bumped once the old server has stopped) into the state
folder; ``restart`` signals it and returns when the old server is gone, so the caller's health check sees the
new one. On SIGTERM the unit stops vLLM and exits. A start that fails (bad arguments, no health in time) leaves
the unit running without a server until the next restart: the remediation's health check sees it."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import procs

RESTART = signal.SIGUSR1


def _write(path: Path, text: str) -> None:
    from triage.remediations.atomic import replace_file

    replace_file(path, text.encode())


def serve(args_file: Path, port: int, state: Path, otlp: str | None, ready_s: float) -> int:
    from triage.remediations.engine_args import argv_of
    from . import vllm_server

    wake, stop = threading.Event(), threading.Event()
    signal.signal(RESTART, lambda *_: wake.set())
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), wake.set()))
    signal.signal(signal.SIGINT, lambda *_: (stop.set(), wake.set()))
    state.mkdir(parents=True, exist_ok=True)
    generation = 0
    _write(state / "generation", "0")
    _write(state / "pid", str(os.getpid()))
    server = None
    while not stop.is_set():
        try:
            extra = tuple(argv_of(args_file.read_text()))
            work = tempfile.mkdtemp(prefix="triage-vllm-")
            _write(state / "server_dir", work)
            server = vllm_server.VLLM(otlp_url=otlp, port=port, extra_args=extra, workdir=Path(work))
            server.start(timeout_s=ready_s)
            _write(state / "status", f"ready {generation} {server.ready_s:.1f}")
            print(f"vllm_unit: generation {generation} ready in {server.ready_s:.1f}s with {' '.join(extra)}",
                  flush=True)
        except (OSError, ValueError, RuntimeError) as exc:
            _write(state / "status", f"failed {generation} {str(exc).splitlines()[0][:200]}")
            server = None
        while not wake.wait(1.0):
            pass
        wake.clear()
        if server is not None:
            t0 = time.monotonic()
            server.stop()
            server = None
            print(f"vllm_unit: generation {generation} stopped in {time.monotonic() - t0:.1f}s", flush=True)
        generation += 1
        _write(state / "generation", str(generation))
    return 0


def restart(state: Path, timeout_s: float) -> int:
    """Signal the unit and wait until its old server has stopped (the generation counter moved)."""
    pid = int((state / "pid").read_text())
    before = (state / "generation").read_text()
    os.kill(pid, RESTART)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if (state / "generation").read_text() != before:
            return 0
        time.sleep(0.1)
    print(f"vllm_unit: pid {pid} did not stop its server within {timeout_s:g}s", file=sys.stderr)
    return 1


class ServingUnit(procs.Server):
    """The unit as a child process of triage (the demo, the tests): its own session, stopped with its vLLM."""
    STOP_S = 45.0

    def __init__(self, args_file: Path, otlp_url: str | None = None, port: int | None = None):
        self.args_file, self.otlp_url = Path(args_file), otlp_url
        self.port = port or procs.free_port()
        self.proc = self._log = None
        self.workdir = Path(tempfile.mkdtemp(prefix="triage-vllm-unit-"))
        self.state = self.workdir / "state"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def restart_argv(self) -> list[str]:
        """What ``[vllm] restart`` holds for this unit."""
        return [sys.executable, "-m", "triage.lab.vllm_unit", "restart", "--state", str(self.state)]

    def start(self, timeout_s: float = 240.0) -> "ServingUnit":
        cmd = [sys.executable, "-m", "triage.lab.vllm_unit", "serve", "--args-file", str(self.args_file),
               "--port", str(self.port), "--state", str(self.state)]
        if self.otlp_url:
            cmd += ["--otlp", self.otlp_url]
        self.log_path = self.workdir / "unit.log"
        self._log = open(self.log_path, "wb")
        # stdin: not the user's terminal (the unit and vLLM run in sessions of their own)
        self.proc = procs.popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            procs.wait_ready(self.proc, f"{self.url}/health", "vllm unit", str(self.log_path), timeout_s, self.stop)
        except BaseException:  # a hang-up while vLLM starts: `with` never gets to __exit__
            self.stop()
            raise
        return self

    def _after_stop(self) -> None:
        """vLLM's folder of the generation running when the unit stopped: the unit removes it itself, unless a
        hang-up left it no time (vLLM's own folder stays short: its IPC socket paths must fit 107 bytes)."""
        try:
            shutil.rmtree((self.state / "server_dir").read_text(), ignore_errors=True)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m triage.lab.vllm_unit")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--args-file", type=Path, required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--state", type=Path, required=True)
    s.add_argument("--otlp")
    s.add_argument("--ready-timeout", type=float, default=180.0)
    r = sub.add_parser("restart")
    r.add_argument("--state", type=Path, required=True)
    r.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        return serve(a.args_file, a.port, a.state, a.otlp, a.ready_timeout)
    return restart(a.state, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
