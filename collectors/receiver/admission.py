"""What the OTLP receiver lets in: the connections it holds and the decoded bytes a request may take.

- one memory budget across requests: the decoded bytes in flight (read, decompressed, parsed, waiting for the
  writer) never exceed ``budget_bytes``; a request that would exceed it is answered 503 + Retry-After. Small
  requests (<= ``SMALL_BODY``) may use a slice of the budget that large ones may not, so large senders cannot
  starve small ones;
- bodies are read and decompressed as they stream, capped on the wire (``max_body``) and decoded
  (``MAX_DECODED``), with a deadline per read and per body;
- connections: an idle (or header-less) connection is closed after ``idle_timeout_s`` (aiohttp's keep-alive
  timeout); at most ``max_connections`` (also kept under the process's open-file limit) are held, the
  longest-idle one is closed to admit a new one; the listen backlog is ``BACKLOG`` (listen.py).
"""
from __future__ import annotations

import asyncio
import errno
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .payloads import MAX_DECODED, SMALL_BODY, PayloadError, StreamDecoder

MAX_BODY = 16 << 20          # compressed or not, what we accept on the wire
BUDGET = 128 << 20           # decoded bytes in flight across all requests
SMALL_RESERVE = 16 << 20     # the slice of the budget only small requests may use
MAX_CONNECTIONS = 512
FD_RESERVE = 64              # open files kept free for the store, logs, Prometheus queries
IDLE_TIMEOUT_S = 30.0        # a connection with no request (or a request whose headers do not arrive)
READ_TIMEOUT_S = 10.0        # between two pieces of a body
BODY_TIMEOUT_S = 60.0        # a whole body


class Busy(Exception):
    """The budget has no room for this request: answered 503 + Retry-After."""


class Budget:
    """Decoded bytes in flight across requests (taken by the event loop and the inflating threads)."""

    def __init__(self, limit: int, small_reserve: int):
        self.limit, self.small_reserve, self.used, self.peak = limit, small_reserve, 0, 0
        self._lock = threading.Lock()

    def take(self, n: int, small: bool) -> bool:
        with self._lock:
            room = self.limit - self.used - (0 if small else self.small_reserve)
            if n > room:
                return False
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


class Bodies:
    """Request bodies read as they stream, each piece counted against the budget before it is kept; gzip is
    inflated off the event loop."""

    def __init__(self, budget: Budget, max_body: int, read_timeout_s: float, body_timeout_s: float):
        self.budget, self.max_body = budget, max_body
        self.read_timeout_s, self.body_timeout_s = read_timeout_s, body_timeout_s
        self._inflate = ThreadPoolExecutor(2, thread_name_prefix="otlp-inflate")

    async def read(self, request, length: int | None, enc: str, held: list) -> bytes:
        """The decoded body; ``held[0]`` counts the budget it took (the caller gives it back). Raises
        PayloadError (400, 408, 413) or Busy."""
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        gz = enc == "gzip"
        upfront = length if (length is not None and not gz) else 0
        if upfront:
            if not self.budget.take(upfront, small=upfront <= SMALL_BODY):
                raise Busy()
            held[0] += upfront

        def reserve(n: int) -> None:  # gzip output, step by step (called in the inflating thread)
            if not self.budget.take(n, small=decoder.total <= SMALL_BODY):
                raise Busy()
            held[0] += n

        decoder = StreamDecoder("gzip" if gz else "identity", MAX_DECODED, reserve if gz else None)
        parts: list[bytes] = []
        wire = 0
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise PayloadError(408, f"body not received within {self.body_timeout_s:g}s")
            try:
                chunk = await asyncio.wait_for(request.content.readany(), min(self.read_timeout_s, left))
            except asyncio.TimeoutError:
                raise PayloadError(408, f"body stalled: nothing received for {min(self.read_timeout_s, left):g}s "
                                   f"after {wire} bytes") from None
            if not chunk:
                break
            wire += len(chunk)
            if wire > self.max_body:
                raise PayloadError(413, f"body exceeds {self.max_body} bytes")
            if gz:  # inflating is CPU work (without the GIL): off the event loop
                out = await loop.run_in_executor(self._inflate, decoder.feed, chunk)
            else:
                out = decoder.feed(chunk)
                if decoder.total > upfront:  # beyond what was reserved up front (chunked: all of it)
                    if not self.budget.take(decoder.total - upfront, small=decoder.total <= SMALL_BODY):
                        raise Busy()
                    held[0] += decoder.total - upfront
                    upfront = decoder.total
            if out:
                parts.append(out)
        decoder.finish()
        if length is not None and wire != length:
            raise PayloadError(400, f"body of {wire} bytes, Content-Length said {length}")
        return b"".join(parts)

    def shutdown(self) -> None:
        self._inflate.shutdown(wait=True)


def connection_cap(max_connections: int) -> int:
    """``max_connections``, kept ``FD_RESERVE`` under the process's open-file limit (and at least 8)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(8, min(max_connections, soft - FD_RESERVE if soft > 0 else max_connections))


class Connections:
    """The connections held, and the accept loop that holds at most ``limit`` of them. Our own accept loop
    rather than loop.create_server's: it accepts only while under the cap (making room first by closing the
    longest-idle connection), and on EMFILE it closes an idle connection instead of logging in a loop.

    ``activity`` maps each connection's handler to [last active (monotonic), requests in progress]; ``count``
    is the receiver's counter (evicted connections)."""

    def __init__(self, sock: socket.socket, limit: int, ssl_context, count):
        self.sock, self.limit, self.ssl, self.count = sock, limit, ssl_context, count
        self.activity: dict = {}
        self.closed = False   # set when the receiver closes: a paused accept loop does not resume
        self._server = None
        self._accepting = 0
        self._paused = False

    def start(self, server) -> None:
        """Accept connections for ``server`` (an aiohttp ``web.Server``); on the event loop."""
        self._server = server
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_acceptable)

    def admit(self, handler) -> None:
        self.activity[handler] = [time.monotonic(), 0]

    def lost(self, handler) -> None:
        self.activity.pop(handler, None)

    def busy(self, handler) -> list | None:
        """A request began on ``handler``'s connection: it cannot be evicted until ``idle(...)``."""
        act = self.activity.get(handler)
        if act is not None:
            act[1] += 1
        return act

    @staticmethod
    def idle(act: list | None) -> None:
        if act is not None:
            act[0] = time.monotonic()
            act[1] -= 1

    def stop_accepting(self) -> None:
        """No new connection (on the event loop); the listening socket is closed."""
        if not self._paused:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()

    def close_all(self) -> None:
        for handler in list(self.activity):
            handler.force_close()

    def _connections(self) -> int:
        return len(self.activity) + self._accepting

    def _evict_one(self) -> bool:
        idle = [(last, h) for h, (last, busy) in self.activity.items() if not busy]
        if not idle:
            return False
        _, victim = min(idle, key=lambda x: x[0])
        self.activity.pop(victim, None)
        victim.force_close()
        self.count(evicted_connections=1)
        return True

    def _pause_accept(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if not self._paused:
            self._paused = True
            loop.remove_reader(self.sock.fileno())

            def resume():
                self._paused = False
                if not self.closed:
                    loop.add_reader(self.sock.fileno(), self._on_acceptable)
            loop.call_later(seconds, resume)

    def _on_acceptable(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):
            if self._connections() >= self.limit and not self._evict_one():
                self._pause_accept(0.05)  # every connection is busy: new ones wait in the backlog
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._evict_one()
                    self._pause_accept(0.05)
                return
            conn.setblocking(False)
            self._accepting += 1
            loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                self._server, sock=conn, ssl=self.ssl, ssl_handshake_timeout=10.0 if self.ssl else None)
        except Exception:  # noqa: BLE001  a failed TLS handshake, a reset: that connection only
            conn.close()
        finally:
            self._accepting -= 1
