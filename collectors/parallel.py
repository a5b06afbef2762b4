"""Parse chunks in worker processes (both cores) while the main process writes to the store.

Results come back in input order; at most two chunks more than workers are in flight, so memory stays bounded
however large the file. Small inputs never pay for a pool: ``Pool`` starts its processes on first use.
If the pool cannot run (a script without a ``__main__`` guard, a killed worker), the remaining work is
done in this process: slower, never lost.
"""
from __future__ import annotations

import io
import os
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class Pool:
    def __init__(self, workers: int | None = None):
        self.workers = workers or default_workers()
        self._ex: ProcessPoolExecutor | None = None
        self.broken = False

    def map(self, fn, items):
        """Ordered map of ``fn(*item)``; inline when there is one worker or the pool broke."""
        if self.workers <= 1 or self.broken:
            for it in items:
                yield fn(*it)
            return
        limit = self.workers + 2  # in flight at most
        pending: deque = deque()

        def result(fut, args):
            if self.broken:
                return fn(*args)
            try:
                return fut.result()
            except BrokenProcessPool:
                self.broken = True
                return fn(*args)

        for it in items:
            if self._ex is None and not self.broken:
                self._start()  # on the first item: a map with nothing to do starts no process
            if self.broken:
                while pending:
                    yield result(*pending.popleft())
                yield fn(*it)
                continue
            try:
                pending.append((self._ex.submit(fn, *it), it))
            except (BrokenProcessPool, RuntimeError, OSError, ValueError):
                self.broken = True
                pending.append((None, it))
            if len(pending) >= limit:
                yield result(*pending.popleft())
        while pending:
            yield result(*pending.popleft())

    def _start(self) -> None:
        """Start the executor (spawn, not fork: the parent holds DuckDB and UI threads, which must not be
        forked). multiprocessing's resource tracker inherits ``sys.stderr``'s descriptor; under the TUI that
        is a capture object without one, which made every start fail, so it gets /dev/null instead. If the
        processes cannot start at all, the work is done in this process."""
        swap = None
        try:
            if sys.stderr is None or sys.stderr.fileno() < 0:
                raise ValueError
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            swap, sys.stderr = sys.stderr, open(os.devnull, "w")
        try:
            self._ex = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        except (OSError, ValueError, RuntimeError):
            self.broken = True
        finally:
            if swap is not None:
                sys.stderr.close()
                sys.stderr = swap

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=not self.broken, cancel_futures=True)
            self._ex = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
