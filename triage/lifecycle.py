"""How every command ends when its terminal goes away or it is told to stop: within a second or two, with the
servers and workers it started stopped by the ``finally`` blocks that started them.

What asks a command to stop:

- SIGTERM;
- SIGHUP, unless it was already ignored when triage started (``nohup``: the user asked to outlive the terminal);
- the terminal going away while stdin, stdout or stderr is one. A thread polls those terminals for POLLHUP. A
  hung-up terminal reads as end-of-file forever, and Textual's input thread goes back to ``select`` after an
  empty read, which answers at once: without this watch a TUI whose terminal is gone spins at most of a core
  for good when its SIGHUP does not arrive or is ignored (under ``make`` in a killed tmux, for one).

How it stops: a registered stopper (the TUI registers its thread-safe ``exit``) is asked first; when none is
registered, or it cannot act, SystemExit(128 + signal) is raised in the main thread, once, so the ``finally``
blocks run; later signals do not interrupt that cleanup. An app still running GRACE_S after its stopper was
asked gets SystemExit raised in the main thread anyway; a process still there HARD_S later ends with
``os._exit`` (the servers we started get SIGTERM from the kernel then: they were started with a parent-death
signal, see triage.lab.procs). A stopped command ends its process.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable

#: Set once the running command was asked to stop; whoever stops servers reads it to cut their grace short.
hurry_servers = threading.Event()


TERMINAL_CLOSED = "terminal closed"


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reason: str | None = None
        self.code = 0
        self.raised = False      # SystemExit was raised in the main thread (at most once)
        self.handled = False     # a stopper took the request
        self.force = False       # the grace period is over: raise even though a stopper took it
        self.stoppers: list[Callable[[int], bool]] = []
        self.main_ident = threading.main_thread().ident
        self.returned = threading.Event()  # set when the guarded command returned

    def request(self, reason: str, code: int) -> bool:
        """Record a stop request; the first one runs the stoppers and arms the backstop. Returns whether it
        was the first."""
        with self.lock:
            if self.reason is not None:
                return False
            self.reason, self.code = reason, code
            stoppers = list(self.stoppers)
        hurry_servers.set()  # the servers we started (triage.lab.procs) get a short grace, not their full graceful stop
        self.handled = any(_safely(s, code) for s in stoppers)
        threading.Thread(target=self._backstop, name="triage-stop-backstop", daemon=True).start()
        if not self.handled and threading.get_ident() != self.main_ident:
            self._interrupt_main()
        return True

    def _interrupt_main(self) -> None:
        # a real signal, so that a main thread blocked in a system call or a lock wakes up (interrupt_main would not)
        try:
            signal.pthread_kill(self.main_ident, signal.SIGTERM)
        except (OSError, ValueError):
            pass

    def _backstop(self) -> None:
        if not self.returned.wait(GRACE_S):
            with self.lock:
                stuck = self.handled and bool(self.stoppers)  # the app a stopper was asked to end still runs
            if stuck:  # (once it has returned, the command is in its cleanup: that is not interrupted)
                self.force = True
                self._interrupt_main()
        # a stopped command ends the process; if its cleanup or the interpreter's exit hangs (a thread that
        # never returns), this daemon thread is still there to end it
        time.sleep(HARD_S)
        os._exit(self.code)


GRACE_S = 1.5   # a stopper (the TUI's exit) gets this long before SystemExit is raised in the main thread
HARD_S = 15.0   # ... and the cleanup this much more (Triton's graceful stop alone takes ~3 s) before the
                # process ends without it
_state: _State | None = None


def _safely(stopper: Callable[[int], bool], code: int) -> bool:
    try:
        return bool(stopper(code))
    except Exception:  # noqa: BLE001  (a stopper that fails leaves the SystemExit path)
        return False


def _handler(signum, frame) -> None:
    st = _state
    if st is None:
        return
    st.request(signal.Signals(signum).name, 128 + signum)
    if not st.raised and (st.force or not st.handled):
        st.raised = True
        raise SystemExit(st.code)


def _terminals() -> list[int]:
    out = []
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                out.append(fd)
        except OSError:
            pass
    return out


def _watch_terminals(fds: list[int], wake_fd: int) -> None:
    """Block until one of ``fds`` hangs up (or ``wake_fd`` is readable: the command is over)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, 0)  # no events asked: poll still reports POLLHUP and POLLERR, and ignores typing
    poller.register(wake_fd, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == wake_fd:
                return
            if ev & select.POLLNVAL:
                poller.unregister(fd)
            elif ev & (select.POLLHUP | select.POLLERR):
                st = _state
                if st is not None:
                    st.request(TERMINAL_CLOSED, 128 + signal.SIGHUP)
                return


@contextmanager
def guard():
    """Install the handlers and the terminal watch for the duration of one command (restored afterwards, so
    in-process callers such as the tests keep theirs). Yields the state: ``reason`` is set when a stop was asked."""
    global _state
    if threading.current_thread() is not threading.main_thread():
        yield _State()  # signals can only be handled in the main thread; nothing to install
        return
    st = _state = _State()
    hurry_servers.clear()  # a new command (in-process callers run several): servers stop gracefully again
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        current = signal.getsignal(sig)
        if sig == signal.SIGHUP and current == signal.SIG_IGN:
            continue  # nohup: the terminal watch still ends a command whose terminal is gone
        previous[sig] = current
        signal.signal(sig, _handler)
    fds = _terminals()
    wake_r = wake_w = None
    if fds:
        wake_r, wake_w = os.pipe()
        threading.Thread(target=_watch_terminals, args=(fds, wake_r), name="triage-terminal-watch",
                         daemon=True).start()
    try:
        yield st
    finally:
        st.returned.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if wake_w is not None:
            os.write(wake_w, b"x")
            os.close(wake_w)
        _state = None


def stopping() -> bool:
    """Whether the running command was asked to stop."""
    st = _state
    return st is not None and st.reason is not None


def run(fn: Callable[..., int], *args) -> int:  # noqa: RET503 (a stopped command does not return)
    """``fn(*args)`` under ``guard()``: its exit code, or 128 + the signal when it was stopped (saying so on
    stderr, if stderr is still there). A stopped command ends the process here, once its ``finally`` blocks
    have stopped what it started: exit handlers run (temporary folders go), worker threads still busy (an
    analysis in a thread cannot be interrupted) are not waited for, and the interpreter's own teardown (over a
    second with torch and the OTel SDK loaded, in the demo) is skipped."""
    with guard() as st:
        try:
            rc = fn(*args)
        except SystemExit:
            if st.reason is None:
                raise
            rc = st.code
    if st.reason is None:
        return rc
    try:
        print(f"triage: stopped ({st.reason})", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # the terminal is gone
    import atexit

    atexit._run_exitfuncs()  # the finalizers that remove temporary folders, among others
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(st.code)


@contextmanager
def stopper(fn: Callable[[int], bool]):
    """While inside, a stop request calls ``fn(exit_code)`` (from a signal handler or the watch thread) instead
    of raising SystemExit; ``fn`` returns False when it cannot act (then SystemExit is raised as usual)."""
    st = _state
    if st is None:
        yield
        return
    with st.lock:
        st.stoppers.append(fn)
        asked = st.reason is not None
    try:
        if asked and not st.raised:  # asked before we got here
            st.raised = True
            raise SystemExit(st.code)
        yield
    finally:
        with st.lock:
            st.stoppers.remove(fn)
