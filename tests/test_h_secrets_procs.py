"""Servers triage starts: their own session (no preexec_fn while threads run), stopped with their whole process
group, gone when triage is killed, and the temporary folder each launcher made is removed by its stop()."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from promserver import need_prometheus


def gone(pid: int, within_s: float) -> bool:
    """The process has exited (a zombie waiting for its parent counts as gone), polled up to ``within_s``."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_server_gets_its_own_session_and_dies_with_a_killed_triage():
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom triage.lab import procs\n"
         "p = procs.popen(['sleep', '60'])\nprint(p.pid, flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    try:
        pid = int(parent.stdout.readline())
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid
        end = time.monotonic() + 10  # the parent-death signal is armed just before setpriv execs the server
        while not open(f"/proc/{pid}/cmdline").read().startswith("sleep\0") and time.monotonic() < end:
            time.sleep(0.02)
        parent.kill()  # SIGKILL: no finally, no atexit; the kernel's parent-death signal is what is left
        parent.wait(10)
        assert gone(pid, 5), "the server outlived a killed triage"
    finally:
        parent.kill()
        parent.wait(10)
        if "pid" in locals() and not gone(pid, 0.1):
            os.kill(pid, signal.SIGKILL)


def test_terminate_stops_the_whole_process_group():
    from triage.lab import procs

    p = procs.popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    child = int(p.stdout.readline())
    procs.terminate(p, 5)
    p.stdout.close()
    assert p.returncode is not None
    assert gone(child, 5), "a server's child outlived terminate()"


def test_prometheus_server_has_its_own_session_and_stop_removes_its_folder():
    need_prometheus()
    from triage.lab.prometheus_server import PrometheusServer

    prom = PrometheusServer()
    try:
        assert os.getsid(prom.proc.pid) == prom.proc.pid
        assert prom.workdir.is_dir()
    finally:
        prom.stop()
    assert prom.proc.poll() is not None
    assert not prom.workdir.exists()


def test_prometheus_server_leaves_a_given_folder_to_its_owner(tmp_path):
    need_prometheus()
    from triage.lab.prometheus_server import PrometheusServer

    prom = PrometheusServer(workdir=tmp_path / "prom")
    prom.stop()
    assert (tmp_path / "prom" / "prometheus.log").exists()


def test_a_server_that_fails_to_start_is_reported_with_its_log_and_cleaned_up(tmp_path):
    from triage.lab import procs

    log = tmp_path / "srv.log"
    with open(log, "wb") as out:
        p = procs.popen(["sh", "-c", "echo 'listen tcp: address already in use' >&2; exit 3"], stdout=out,
                        stderr=subprocess.STDOUT)
        stopped = []
        with pytest.raises(RuntimeError) as exc:
            procs.wait_ready(p, "http://127.0.0.1:9/", "srv", str(log), 10, lambda: stopped.append(True))
    assert "exited (3)" in str(exc.value) and "address already in use" in str(exc.value)
    assert stopped == [True]
