"""Textual's Linux driver, made to survive its terminal going away.

Textual writes to the terminal from a writer thread fed by a bounded queue (30 writes). Writing to a hung-up
terminal fails with EIO, which ends that thread; the app's next writes fill the queue and its shutdown then
blocks for good putting the stop marker into it (seen: a ``triage`` whose terminal was closed, stuck in
``WriterThread.stop``). Here the writes go through a file that drops them once the terminal is gone, so the
writer thread keeps draining its queue and the app can exit. Ending the app on hang-up is triage/lifecycle.py's job.

Textual runs thread workers (the analysis) in the event loop's default executor, and ``asyncio.run`` waits for
them when the app exits: a hang-up during a long ingest would wait for the ingest. ``StoppableExecutor`` does
not wait once the command is being stopped (lifecycle then ends the process without joining them).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from textual.drivers.linux_driver import LinuxDriver

from triage import lifecycle


class _TerminalFile:
    """The terminal as a file whose writes stop (silently) at the first OSError: EIO after a hang-up."""

    def __init__(self, file) -> None:
        self._file = file
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._file.write(text)
            except (OSError, ValueError):
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._file.flush()
            except (OSError, ValueError):
                self.gone = True

    def __getattr__(self, name):  # fileno, isatty, encoding, ...
        return getattr(self._file, name)


class HangupSafeDriver(LinuxDriver):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._file = _TerminalFile(self._file)


class StoppableExecutor(ThreadPoolExecutor):
    """The app's default executor: its shutdown does not wait for running workers when a stop was asked."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if lifecycle.stopping():
            wait, cancel_futures = False, True
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
