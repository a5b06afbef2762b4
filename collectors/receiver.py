"""OTLP/HTTP trace receiver: ``POST /v1/traces`` with protobuf or JSON bodies, gzip-encoded or not, sized by
``Content-Length`` or chunked.

Answers as the OTLP specification says: 200 (with ``partial_success`` when some spans were rejected), 400 for
input that will never succeed (undecodable, wrong shape, values the store cannot hold, nothing valid), 401
without the bearer token when one is required, 408 for a body that does not arrive in time, 413 when the body
(or what it decompresses to) is too large, 415 for an unsupported type or encoding, and 503 with
``Retry-After`` only for load (the memory budget or the ingest queue is full). A request is answered 200 only
after its spans are committed to the store, so every acknowledged span is in the store.

The server is aiohttp's (an asyncio HTTP/1.1 stack: chunked bodies, keep-alive, header size limits) on one
event-loop thread, with one resource policy around it:
- one memory budget across requests: the decoded bytes in flight (read, decompressed, parsed, waiting for the
  writer) never exceed ``budget_bytes``; a request that would exceed it is answered 503 + Retry-After. Small
  requests (<= ``SMALL_BODY``) may use a slice of the budget that large ones may not, so large senders cannot
  starve small ones;
- bodies are read and decompressed as they stream (multi-member gzip included), capped on the wire
  (``max_body``) and decoded (``MAX_DECODED``), with a deadline per read and per body;
- connections: an idle (or header-less) connection is closed after ``idle_timeout_s``; at most
  ``max_connections`` (also kept under the process's open-file limit) are held, the longest-idle one is closed
  to admit a new one; the listen backlog is ``BACKLOG``;
- parsing runs off the event loop in two lanes (small and large bodies), and the single writer takes small
  batches before large ones.

With ``staging=True`` (live sessions) spans land in ``pending_spans`` / ``pending_events`` with their arrival
time, and ``promote()`` moves a trace into ``spans`` / ``span_events`` once no span of it has arrived for a
while. Services export in batches (the OpenTelemetry SDK's batch processor every 5 s by default, Triton
likewise), so a request's downstream spans often arrive seconds after its root; analysed before they arrive,
the request would look as if it never queued or computed. Without staging each batch is promoted as it is
written. Promotion keeps one span per (trace id, span id) and counts the duplicates as a problem.
Spans whose end time is far from their arrival time are reported as clock skew (once per service).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import os
import queue
import re
import resource
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field

import duckdb
import numpy as np
import orjson

from . import otlp_document, otlp_proto
from .problems import Problems
from .spans import SpanColumns
from .store import EVENT_COLUMNS, SPAN_COLUMNS, Store, insert_frame

MAX_BODY = 16 << 20          # compressed or not, what we accept on the wire
MAX_DECODED = 64 << 20       # what a body may decompress to (decompression bombs stop here)
SMALL_BODY = 1 << 20         # a small request: its own parse lane, its own slice of the budget
INFLATE_STEP = 1 << 20       # gzip is inflated (off the event loop) this much at a time, each step budgeted
PIECE_SPANS = 8192           # a large request is written in pieces this size, small requests in between
BUDGET = 128 << 20           # decoded bytes in flight across all requests
SMALL_RESERVE = 16 << 20     # the slice of the budget only small requests may use
MAX_CONNECTIONS = 512
FD_RESERVE = 64              # open files kept free for the store, logs, Prometheus queries
BACKLOG = 1024
IDLE_TIMEOUT_S = 30.0        # a connection with no request (or a request whose headers do not arrive)
READ_TIMEOUT_S = 10.0        # between two pieces of a body
BODY_TIMEOUT_S = 60.0        # a whole body
SKEW_BEHIND_NS = 5 * 60 * 10**9   # a span ending this long before it arrived: the exporter's clock is behind
SKEW_AHEAD_NS = 60 * 10**9        # ... or after it arrived: ahead
DEFAULT_PORT = 4318
PROTO_TYPES = {"application/x-protobuf", "application/protobuf"}
JSON_TYPES = {"application/json"}
TOKEN_ENV = "TRIAGE_OTLP_BEARER_TOKEN"
# Errors that say the data cannot be stored (out-of-range values, wrong types), not that the store failed:
# the batch is answered 400 / partial success, never with a retry the exporter would repeat for ever.
DATA_ERRORS = (duckdb.DataError, duckdb.InvalidInputException, duckdb.TypeMismatchException,
               OverflowError, ValueError, TypeError)


class PayloadError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ListenError(ValueError):
    """The receiver cannot listen where it was asked to (the message names the option to change)."""


class _Busy(Exception):
    pass


# -- addresses and security -----------------------------------------------------------------------

def parse_listen(text: str) -> tuple[str, int] | None:
    """``--otlp-listen``: ``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``[v6]`` (port 4318), ``:PORT`` or ``PORT``
    (127.0.0.1), ``off``."""
    t = (text or "").strip()
    if t.lower() in ("off", "none", ""):
        return None
    host, port = t, ""
    if t.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", t)
        if not m or not m.group(1):
            raise ListenError(f"--otlp-listen {text!r}: an IPv6 address is written [ADDRESS]:PORT, e.g. [::1]:4318")
        host, port = m.group(1), m.group(2) or ""
    elif t.count(":") > 1:
        host = t  # a bare IPv6 address
    elif ":" in t:
        host, port = t.rsplit(":", 1)
    elif t.isdigit():
        host, port = "", t
    if port == "" and (t.endswith(":")):
        raise ListenError(f"--otlp-listen {text!r}: no port after ':' (HOST:PORT, [IPv6]:PORT, HOST, :PORT or off)")
    try:
        p = int(port) if port != "" else DEFAULT_PORT
    except ValueError:
        p = -1
    if not 0 <= p <= 65535:
        raise ListenError(f"--otlp-listen {text!r}: port {port!r} is not a number from 0 to 65535 "
                          "(HOST:PORT, [IPv6]:PORT, HOST, :PORT or off)")
    return (host or "127.0.0.1", p)


def token_from_env(environ=None) -> str | None:
    """The bearer token exporters must send: ``TRIAGE_OTLP_BEARER_TOKEN`` or the file named by
    ``TRIAGE_OTLP_BEARER_TOKEN_FILE`` (trailing whitespace, e.g. a mounted secret's newline, stripped)."""
    env = os.environ if environ is None else environ
    path = env.get(TOKEN_ENV + "_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().rstrip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ListenError(f"{TOKEN_ENV}_FILE: cannot read {path}: {exc}") from exc
        if not value:
            raise ListenError(f"{TOKEN_ENV}_FILE: {path} is empty")
        return value
    value = (env.get(TOKEN_ENV) or "").rstrip()
    return value or None


def _tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ListenError(f"--otlp-tls-cert/--otlp-tls-key: cannot load {cert}"
                          f"{' and ' + key if key else ''}: {exc}") from exc
    return ctx


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"--otlp-listen: cannot resolve host {host!r}: {exc.strerror}") from exc
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        shown = f"[{addr[0]}]:{port}" if family == socket.AF_INET6 else f"{addr[0]}:{port}"
        if exc.errno == 98:  # EADDRINUSE
            raise ListenError(f"cannot receive OTLP on {shown}: the port is already in use (another triage, or an "
                              f"OpenTelemetry Collector?); choose another with --otlp-listen HOST:PORT, or "
                              f"--otlp-listen off") from exc
        raise ListenError(f"cannot receive OTLP on {shown}: {exc.strerror or exc}; choose another address with "
                          f"--otlp-listen HOST:PORT") from exc
    sock.setblocking(False)
    return sock


def _resolve_host(host: str, port: int) -> str:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][4][0]
    except socket.gaierror as exc:
        raise ListenError(f"--otlp-listen: cannot resolve host {host!r}: {exc.strerror}") from exc


def exposure(address: str, tls: bool, token: str | None, insecure: bool) -> str | None:
    """A receiver on a non-loopback address needs TLS and a bearer token, or ``--otlp-insecure`` (then the
    warning to print is returned). Raises ListenError otherwise."""
    if is_loopback(address):
        return None
    missing = [what for what, ok in (("TLS (--otlp-tls-cert/--otlp-tls-key)", tls),
                                     (f"a bearer token ({TOKEN_ENV} or {TOKEN_ENV}_FILE)", token)) if not ok]
    if not missing:
        return None
    if not insecure:
        raise ListenError(f"--otlp-listen {address}: a receiver others can reach needs {' and '.join(missing)}; "
                          "or pass --otlp-insecure to accept unauthenticated spans from the network")
    return (f"receiving OTLP on {address} without {' and '.join(missing)}: anyone who can reach this address "
            "can send spans (--otlp-insecure)")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


# -- bodies ---------------------------------------------------------------------------------------

def decode_body(body: bytes, encoding: str | None) -> bytes:
    """A whole body decoded (identity or gzip), capped at ``MAX_DECODED``."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return body
    if enc != "gzip":
        raise PayloadError(415, f"unsupported Content-Encoding {encoding!r} (identity or gzip)")
    g = _StreamDecoder("gzip", MAX_DECODED)
    out = g.feed(body)
    g.finish()
    return out


class _StreamDecoder:
    """Identity or gzip, fed piece by piece; ``total`` is the decoded size so far. Gzip output is produced in
    steps of ``INFLATE_STEP`` bytes, each reserved with ``reserve(n)`` (which raises to refuse) before it is
    kept: a bomb is stopped by the cap or the budget, never after it has been inflated."""

    def __init__(self, encoding: str, cap: int, reserve=None):
        self.gzip = encoding == "gzip"
        self.cap = cap
        self.total = 0
        self.reserve = reserve
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None
        self._in_member = False   # bytes of the current member have been fed and it has not ended
        self._members = 0

    def feed(self, data: bytes) -> bytes:
        if not self.gzip:
            self.total += len(data)
            if self.total > self.cap:
                raise PayloadError(413, f"body larger than {self.cap} bytes")
            return data
        out = []
        while data:
            if self._d.eof:  # the previous member ended: what follows is another member, or zero padding
                if not data.strip(b"\0"):
                    break
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._in_member = True
            try:
                piece = self._d.decompress(data, min(INFLATE_STEP, self.cap - self.total + 1))
            except zlib.error as exc:
                raise PayloadError(400, f"invalid gzip body (member {self._members + 1}): {exc}") from exc
            self.total += len(piece)
            if self.total > self.cap:
                raise PayloadError(413, f"body decompresses to more than {self.cap} bytes")
            if self.reserve is not None and piece:
                self.reserve(len(piece))
            out.append(piece)
            if self._d.eof:
                self._members += 1
                self._in_member = False
                data = self._d.unused_data + self._d.unconsumed_tail
            else:
                data = self._d.unconsumed_tail
        return b"".join(out)

    def finish(self) -> None:
        if self.gzip and (self._in_member or self._members == 0):
            raise PayloadError(400, "truncated gzip body" if self._in_member else "empty gzip body")


def parse_payload(data: bytes, content_type: str, source: str) -> SpanColumns:
    """The spans of one request. Raises PayloadError (400) for bytes that are not a request, a JSON body of
    the wrong shape, or values that cannot be converted."""
    cols = SpanColumns(source)
    try:
        if content_type in PROTO_TYPES:
            try:
                req = otlp_proto.parse(data)
            except ValueError as exc:
                raise PayloadError(400, str(exc)) from exc
            otlp_proto.parse_request(req, cols, "")
        else:
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise PayloadError(400, f"invalid JSON: {exc}") from exc
            if not isinstance(doc, dict) or otlp_document.unwrap(doc) is None:
                raise PayloadError(400, "JSON body has no resourceSpans")
            otlp_document.parse_request(otlp_document.unwrap(doc), cols, "")
    except PayloadError:
        raise
    except (RecursionError, *DATA_ERRORS) as exc:  # a value no reader expected: the data's fault, say so
        raise PayloadError(400, f"cannot convert the spans: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return cols


# -- the receiver ---------------------------------------------------------------------------------

@dataclass
class _Job:
    cols: SpanColumns
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None          # the store failed (retryable)
    stored: int = 0
    rejected: int = 0                 # spans the store refused (data), answered as partial success
    done_cb: object = None            # called by the writer when done (wakes the waiting request)


@dataclass
class ReceiverStats:
    requests: int = 0
    accepted_spans: int = 0
    rejected_spans: int = 0
    duplicate_spans: int = 0
    refused_busy: int = 0
    bad_requests: int = 0
    unauthorized: int = 0
    timeouts: int = 0
    evicted_connections: int = 0


class _Budget:
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


class Receiver:
    """The server and its single writer. ``start()`` / ``stop()``; ``port`` is the bound port."""

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = DEFAULT_PORT, queue_size: int = 64,
                 retry_after_s: int = 1, max_body: int = MAX_BODY, staging: bool = False, *,
                 tls_cert: str | None = None, tls_key: str | None = None, token: str | None = None,
                 insecure: bool = False, budget_bytes: int = BUDGET, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, read_timeout_s: float = READ_TIMEOUT_S,
                 body_timeout_s: float = BODY_TIMEOUT_S):
        if budget_bytes < MAX_DECODED + SMALL_RESERVE:
            raise ValueError(f"budget_bytes must hold one largest body ({MAX_DECODED}) and the small slice")
        self.store = store
        self.staging = staging
        for table, like in (("pending_spans", "spans"), ("pending_events", "span_events")):
            store.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT *, 0::BIGINT AS arrived_ns "
                          f"FROM {like} LIMIT 0")
        store.execute("CREATE TABLE IF NOT EXISTS trace_arrivals (trace_id VARCHAR, arrived_ns BIGINT)")
        self.queue: queue.PriorityQueue = queue.PriorityQueue(maxsize=queue_size)
        self._seq = itertools.count()
        self.retry_after_s = retry_after_s
        self.max_body = max_body
        self.stats = ReceiverStats()
        self.problems = Problems()
        self._lock = threading.Lock()
        self._skew_seen: set[tuple[str, str]] = set()
        # without staging: hashes of the (trace id, span id) pairs written, seeded from the store
        self._seen: set[int] = set() if staging else {
            hash(k) for k in store.query("SELECT trace_id, span_id FROM spans")}
        self._last_arrival = 0
        self.token = token
        self.idle_timeout_s, self.read_timeout_s, self.body_timeout_s = idle_timeout_s, read_timeout_s, body_timeout_s
        self.budget = _Budget(budget_bytes, SMALL_RESERVE)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = max(8, min(max_connections, soft - FD_RESERVE if soft > 0 else max_connections))
        self._ssl = _tls_context(tls_cert, tls_key) if tls_cert else None
        if tls_key and not tls_cert:
            raise ListenError("--otlp-tls-key needs --otlp-tls-cert")
        # checked before binding: nothing listens on a reachable address without TLS and a token
        self.warning = exposure(_resolve_host(host, port), tls=self._ssl is not None, token=token, insecure=insecure)
        self._sock = _bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._writer: threading.Thread | None = None
        self._closed = False
        from concurrent.futures import ThreadPoolExecutor

        self._process = None  # the large lane's worker process, started on the first large body
        self._process_broken = False
        self._lanes = {"inflate": ThreadPoolExecutor(2, thread_name_prefix="otlp-inflate"),
                       "small": ThreadPoolExecutor(1, thread_name_prefix="otlp-parse-small"),
                       "large": ThreadPoolExecutor(1, thread_name_prefix="otlp-parse-large")}

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}/v1/traces"

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> "Receiver":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run_loop():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001  (reported to start())
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._writer = threading.Thread(target=self._write_loop, daemon=True, name="otlp-writer")
        self._writer.start()
        t = threading.Thread(target=run_loop, daemon=True, name="otlp-server")
        t.start()
        self._threads.append(t)
        ready.wait()
        if failure:
            self.stop()
            raise failure[0]
        return self

    def close(self) -> None:
        """Stop receiving: no new connection or request; requests already read are answered (and their spans
        committed) before this returns. After it, nothing more can be acknowledged."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self._threads:
            t.join()
        self._threads = []
        if self._writer is not None:
            self.queue.put((9, next(self._seq), None))
            self._writer.join()  # the writer finishes what was acknowledged before it exits
            self._writer = None
        for lane in self._lanes.values():
            lane.shutdown(wait=True)
        if self._process is not None:
            self._process.shutdown(wait=True, cancel_futures=True)
            self._process = None
        try:
            self._sock.close()
        except OSError:
            pass

    def stop(self) -> None:
        self.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def _serve(self) -> None:
        from aiohttp import web

        receiver = self

        class Server(web.Server):
            """aiohttp's server with a connection cap: at the cap, the longest-idle connection makes room."""

            def __call__(self):
                handler = super().__call__()
                receiver._admit(self, handler)
                return handler

            def connection_lost(self, handler, exc=None):
                receiver._activity.pop(handler, None)
                super().connection_lost(handler, exc)

        import logging

        class Counting(logging.Handler):
            """aiohttp answers a malformed request itself (400) and logs it with a traceback: counted here,
            never printed (the terminal belongs to the TUI or the report)."""

            def emit(self, record):
                if record.levelno >= logging.ERROR:
                    receiver._count(bad_requests=1)

        quiet = logging.Logger("triage.otlp.server")  # not in the logging tree: nothing propagates to the root
        quiet.addHandler(Counting())
        self._activity: dict = {}
        self._server = Server(self._handle, keepalive_timeout=self.idle_timeout_s, auto_decompress=False,
                              access_log=None, max_line_size=8190, max_field_size=8190, max_headers=64,
                              lingering_time=0, handler_cancellation=False, logger=quiet)
        self._accepting = 0
        self._accept_paused = False
        # our own accept loop rather than loop.create_server's: it accepts only while under the connection cap
        # (making room first), and on EMFILE it closes an idle connection instead of logging in a loop
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_acceptable)

    def _connections(self) -> int:
        return len(self._activity) + self._accepting

    def _evict_one(self) -> bool:
        idle = [(last, h) for h, (last, busy) in self._activity.items() if not busy]
        if not idle:
            return False
        _, victim = min(idle, key=lambda x: x[0])
        self._activity.pop(victim, None)
        victim.force_close()
        self._count(evicted_connections=1)
        return True

    def _pause_accept(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if not self._accept_paused:
            self._accept_paused = True
            loop.remove_reader(self._sock.fileno())

            def resume():
                self._accept_paused = False
                if not self._closed:
                    loop.add_reader(self._sock.fileno(), self._on_acceptable)
            loop.call_later(seconds, resume)

    def _on_acceptable(self) -> None:
        import errno

        loop = asyncio.get_running_loop()
        for _ in range(64):
            if self._connections() >= self.max_connections and not self._evict_one():
                self._pause_accept(0.05)  # every connection is busy: new ones wait in the backlog
                return
            try:
                conn, _ = self._sock.accept()
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
                self._server, sock=conn, ssl=self._ssl, ssl_handshake_timeout=10.0 if self._ssl else None)
        except Exception:  # noqa: BLE001  a failed TLS handshake, a reset: that connection only
            conn.close()
        finally:
            self._accepting -= 1

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._accept_paused:
            loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._server.pre_shutdown()
        await self._server.shutdown(timeout=self.body_timeout_s)
        for handler in list(self._activity):
            handler.force_close()

    def _admit(self, server, handler) -> None:
        self._activity[handler] = [time.monotonic(), 0]

    # -- the writer -----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            _, _, job = self.queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: _Job) -> None:
        """Store one request's spans. A large request is written in pieces of ``PIECE_SPANS``, with the small
        requests that arrived meanwhile written between two pieces (a 10 MB batch would otherwise hold the
        writer for a second). A piece that fails for a store error answers the request 503; the pieces already
        written are not lost or doubled when the client retries (duplicates are kept once)."""
        try:
            pieces = [job.cols] if len(job.cols) <= PIECE_SPANS else _pieces(job.cols, PIECE_SPANS)
            for k, piece in enumerate(pieces):
                if k:
                    self._write_small_waiting()
                try:
                    (self._write if piece is job.cols else lambda c: self._write_frames(c.spans, c.events))(piece)
                    job.stored += len(piece)
                except DATA_ERRORS:
                    stored, rejected = self._write_isolating(piece)
                    job.stored += stored
                    job.rejected += rejected
        except Exception as exc:  # noqa: BLE001  the store failed (disk full, ...): 503, retry
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            if job.done_cb:
                job.done_cb()
            job.done.set()

    def _write_small_waiting(self) -> None:
        while True:
            with self.queue.mutex:  # only this thread takes from the queue: what is at its head stays there
                head = self.queue.queue[0] if self.queue.queue else None
            if head is None or head[0] != 0 or head[2] is None:
                return
            self._run(self.queue.get_nowait()[2])

    def _write(self, cols: SpanColumns) -> None:
        """One request's spans and events, both or neither (a 503 makes the client send them again)."""
        self._write_frames(cols.spans, cols.events)

    def _write_frames(self, spans: dict, events: dict) -> None:
        self._check_skew(spans)
        if not self.staging:
            return self._write_direct(spans, events)
        with self.store.transaction() as con:
            # stamped once the writer holds the store (waiting for it is not settling time), unique per batch
            now = max(self.clock(), self._last_arrival + 1)
            self._last_arrival = now
            for table, names, data in (("pending_spans", SPAN_COLUMNS, spans),
                                       ("pending_events", EVENT_COLUMNS, events)):
                arrived = np.full(len(data[names[0]]), now, dtype=np.int64)
                insert_frame(con, table, names + ("arrived_ns",), {**data, "arrived_ns": arrived})

    def _write_direct(self, spans: dict, events: dict) -> None:
        """Without staging: straight into the analysed tables, one span per (trace id, span id). The ids
        written are remembered as 64-bit hashes (a duplicate check in the store would scan every span for
        every request)."""
        pairs = list(zip(spans["trace_id"], spans["span_id"]))
        hashes = [hash(k) for k in pairs]
        seen = self._seen
        if len(set(hashes)) < len(hashes) or not seen.isdisjoint(hashes):
            keep, kept = [], set()
            for i, h in enumerate(hashes):
                if h not in seen and h not in kept:
                    kept.add(h)
                    keep.append(i)
            stored = {pairs[i] for i in keep}
            first_event, ekeep = set(), []
            for j, ev in enumerate(zip(events["trace_id"], events["span_id"], events["name"], events["ts_ns"])):
                if ev[:2] in stored and ev not in first_event:  # events of a repeated span: once
                    first_event.add(ev)
                    ekeep.append(j)
            self._count(duplicate_spans=len(pairs) - len(keep))
            spans = {c: [v[i] for i in keep] for c, v in spans.items()}
            events = {c: [v[j] for j in ekeep] for c, v in events.items()}
            hashes = [hashes[i] for i in keep]
        with self.store.transaction() as con:
            insert_frame(con, "spans", SPAN_COLUMNS, spans)
            insert_frame(con, "span_events", EVENT_COLUMNS, events)
        seen.update(hashes)  # once committed

    def _write_isolating(self, cols: SpanColumns) -> tuple[int, int]:
        """The batch failed for its data: find the spans the store refuses (by halving), store the others.
        Returns (stored, rejected)."""
        n = len(cols)
        keys = list(zip(cols.spans["trace_id"], cols.spans["span_id"]))
        ev_of: dict = {}
        for i, k in enumerate(zip(cols.events["trace_id"], cols.events["span_id"])):
            ev_of.setdefault(k, []).append(i)

        def frames(idx):
            spans = {c: [v[i] for i in idx] for c, v in cols.spans.items()}
            eidx = [j for i in idx for j in ev_of.get(keys[i], ())]
            events = {c: [v[j] for j in eidx] for c, v in cols.events.items()}
            return spans, events

        with self.store.writer() as con:
            for t, like in (("_probe_spans", "spans"), ("_probe_events", "span_events")):
                con.execute(f"CREATE OR REPLACE TEMP TABLE {t} AS SELECT * FROM {like} LIMIT 0")

            why: dict = {}

            def fails(idx) -> bool:
                spans, events = frames(idx)
                try:
                    insert_frame(con, "_probe_spans", SPAN_COLUMNS, spans)
                    insert_frame(con, "_probe_events", EVENT_COLUMNS, events)
                    return False
                except DATA_ERRORS as exc:
                    if len(idx) == 1:
                        why[idx[0]] = str(exc).splitlines()[0][:160]
                    return True
                finally:
                    con.execute("DELETE FROM _probe_spans")
                    con.execute("DELETE FROM _probe_events")

            bad: list[int] = []
            todo = [list(range(n))]
            while todo:
                idx = todo.pop()
                if not idx or not fails(idx):
                    continue
                if len(idx) == 1:
                    bad.append(idx[0])
                else:
                    todo += [idx[:len(idx) // 2], idx[len(idx) // 2:]]
            for t in ("_probe_spans", "_probe_events"):
                con.execute(f"DROP TABLE IF EXISTS {t}")
        bad_set = set(bad)
        for i in sorted(bad)[:20]:
            cols.problems.add(cols.source, f"span {keys[i][1]}",
                              f"a value the store cannot hold ({why.get(i, '?')}); span rejected")
        good = [i for i in range(n) if i not in bad_set]
        if good:
            self._write_frames(*frames(good))
        return len(good), len(bad)

    def _check_skew(self, spans: dict) -> None:
        """Clock skew: spans ending far before or after they arrived (once per service and direction)."""
        ends = spans["end_ns"]
        if not ends:
            return
        wall = time.time_ns()
        worst: dict = {}
        for svc, end in zip(spans["service"], ends):
            if not isinstance(end, int):
                continue
            d = end - wall
            key = (svc, "ahead" if d > 0 else "behind")
            if (d > SKEW_AHEAD_NS or -d > SKEW_BEHIND_NS) and key not in self._skew_seen:
                worst[key] = max(worst.get(key, 0), abs(d))
        for (svc, way), d in worst.items():
            self._skew_seen.add((svc, way))
            self._problem(f"service {svc}", f"clock skew: spans end up to {d / 60e9:.1f} min {way} of their arrival "
                          f"({'the exporter clock is behind, or the spans were delivered late' if way == 'behind' else 'the exporter clock is ahead'}); "
                          "live mode keeps them by arrival time")

    def _problem(self, where: str, message: str) -> None:
        with self._lock:
            self.problems.add("otlp-http", where, message)

    # -- staging --------------------------------------------------------------------------------
    def _move(self, con, having: str) -> int:
        """Move the staged traces selected by ``having`` (over pending_spans grouped by trace) into the analysed
        tables: one span per (trace id, span id), the first that arrived, with its events; duplicates (already
        promoted, or received more than once) are counted. Returns the spans moved."""
        span_cols, event_cols = ", ".join(SPAN_COLUMNS), ", ".join(EVENT_COLUMNS)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _settled AS SELECT trace_id, max(arrived_ns) AS last_ns
                        FROM pending_spans GROUP BY trace_id {having}""")
        con.execute("""CREATE OR REPLACE TEMP TABLE _pick AS
                       SELECT p.trace_id, p.span_id, min(p.arrived_ns) AS arrived_ns, count(*) AS copies
                       FROM pending_spans p SEMI JOIN _settled s ON p.trace_id = s.trace_id
                       GROUP BY p.trace_id, p.span_id""")
        con.execute("""CREATE OR REPLACE TEMP TABLE _new AS
                       SELECT k.* FROM _pick k
                       ANTI JOIN (SELECT trace_id, span_id FROM spans SEMI JOIN _settled USING (trace_id)) s
                       ON s.trace_id = k.trace_id AND s.span_id = k.span_id""")
        moved = con.execute(f"""INSERT INTO spans ({span_cols}) SELECT {span_cols} FROM pending_spans p
                                SEMI JOIN _new n ON p.trace_id = n.trace_id AND p.span_id = n.span_id
                                                 AND p.arrived_ns = n.arrived_ns
                                QUALIFY row_number() OVER (PARTITION BY p.trace_id, p.span_id) = 1""").fetchone()[0]
        con.execute(f"""INSERT INTO span_events ({event_cols}) SELECT {event_cols} FROM pending_events e
                        SEMI JOIN _new n ON e.trace_id = n.trace_id AND e.span_id = n.span_id
                                         AND e.arrived_ns = n.arrived_ns""")
        total = con.execute("SELECT coalesce(sum(copies), 0) FROM _pick").fetchone()[0]
        if self.staging:  # what forget() reads: a live window that follows arrival
            con.execute("INSERT INTO trace_arrivals SELECT trace_id, last_ns FROM _settled")
        for table in ("pending_spans", "pending_events"):
            con.execute(f"DELETE FROM {table} WHERE trace_id IN (SELECT trace_id FROM _settled)")
        for t in ("_settled", "_pick", "_new"):
            con.execute(f"DROP TABLE {t}")
        dups = int(total) - int(moved)
        if dups:
            self._count(duplicate_spans=dups)  # one problem for them all: see all_problems()
        return int(moved)

    def all_problems(self) -> Problems:
        """The problems met so far, duplicates summed up in one entry (as file mode reports them)."""
        out = Problems()
        with self._lock:
            out.merge(self.problems)
            dups = self.stats.duplicate_spans
        if dups:
            out.add("otlp-http", "spans", f"{dups} duplicate span(s) received (same trace and span id: an exporter "
                    "retry, or two pipelines sending the same spans); one of each is kept")
        return out

    def promote(self, idle_s: float | None = None, max_hold_s: float | None = None,
                begun_by_ns: int | None = None) -> int:
        """Move staged traces into ``spans`` / ``span_events`` in one transaction: those that have had no new
        span for ``idle_s`` seconds or whose first span came more than ``max_hold_s`` ago (a trace that keeps
        growing is not held back for ever); with ``begun_by_ns`` (a ``clock()`` reading) instead, those whose
        first span had arrived by then; all of them when neither is given. Returns the spans moved."""
        if not self.staging:
            return 0
        with self.store.transaction() as con:
            now = self.clock()
            having = ""
            if begun_by_ns is not None:
                having = f"HAVING min(arrived_ns) <= {int(begun_by_ns)}"
            elif idle_s is not None:
                having = f"HAVING max(arrived_ns) <= {now - int(idle_s * 1e9)}"
                if max_hold_s is not None:
                    having += f" OR min(arrived_ns) <= {now - int(max_hold_s * 1e9)}"
            return self._move(con, having)

    def forget(self, arrived_before_ns: int, keep=None) -> int:
        """Drop the analysed traces that last arrived before ``arrived_before_ns`` (a ``clock()`` reading): a live
        window that follows arrival, so spans from an exporter whose clock is off are analysed, not dropped.
        ``keep(con, trace_ids_sql)``, when given, first copies them elsewhere (``--db``: an attached file, which
        DuckDB writes in a transaction of its own); the store stays held from the copy to the delete, so no span
        arrives in between to be deleted uncopied. Returns the spans dropped."""
        with self.store.writer() as con:
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _old AS SELECT trace_id FROM trace_arrivals
                            GROUP BY trace_id HAVING max(arrived_ns) < {int(arrived_before_ns)}""")
            try:
                if keep:
                    _in_transaction(con, lambda: keep(con, "SELECT trace_id FROM _old"))

                def delete() -> int:
                    n = con.execute("DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM _old)").fetchone()[0]
                    for table in ("span_events", "trace_arrivals"):
                        con.execute(f"DELETE FROM {table} WHERE trace_id IN (SELECT trace_id FROM _old)")
                    return int(n)

                return _in_transaction(con, delete)
            finally:
                con.execute("DROP TABLE IF EXISTS _old")

    @staticmethod
    def clock() -> int:
        """The clock arrivals are stamped with (monotonic: a wall-clock step must not release or hold traces)."""
        return time.monotonic_ns()

    def pending(self) -> dict:
        """What is staged and not yet analysed: spans and traces."""
        if not self.staging:
            return {"spans": 0, "traces": 0}
        spans, traces = self.store.query("SELECT count(*), count(DISTINCT trace_id) FROM pending_spans")[0]
        return {"spans": int(spans), "traces": int(traces)}

    def _count(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    # -- requests -------------------------------------------------------------------------------
    async def _handle(self, request):
        act = self._activity.get(request.protocol)
        if act is not None:
            act[1] += 1
        held = [0]
        try:
            return await self._handle_request(request, held)
        finally:
            if held[0]:
                self.budget.give(held[0])
            if act is not None:
                act[0] = time.monotonic()
                act[1] -= 1

    def _error(self, status: int, message: str, ctype: str, headers: dict | None = None, close: bool = False):
        from aiohttp import web

        if status == 400 or status in (408, 413, 415):
            self._count(bad_requests=1)
        if ctype in PROTO_TYPES:
            from google.rpc import status_pb2

            body = status_pb2.Status(code=3 if status == 400 else 16 if status == 401 else 8 if status in (429, 503)
                                     else 2, message=message).SerializeToString()
            resp = web.Response(status=status, body=body, content_type="application/x-protobuf", headers=headers)
        else:
            resp = web.Response(status=status, body=orjson.dumps({"code": status, "message": message}),
                                content_type="application/json", headers=headers)
        if close:
            resp.force_close()
        return resp

    def _authorized(self, request) -> bool:
        got = request.headers.get("Authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self.token.encode())

    async def _handle_request(self, request, held: list):
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        self._count(requests=1)
        if request.path != "/v1/traces":
            return self._error(404, f"no such endpoint {request.path}", ctype, close=True)
        if request.method != "POST":
            return self._error(405, f"{request.method} is not allowed; POST spans", ctype, {"Allow": "POST"}, True)
        if self.token is not None and not self._authorized(request):
            self._count(unauthorized=1)
            return self._error(401, "missing or wrong bearer token", ctype, {"WWW-Authenticate": "Bearer"}, True)
        if ctype not in PROTO_TYPES and ctype not in JSON_TYPES:
            return self._error(415, f"unsupported Content-Type {ctype!r}", "application/json", close=True)
        enc = (request.headers.get("Content-Encoding") or "identity").strip().lower()
        if enc not in ("identity", "gzip", ""):
            return self._error(415, f"unsupported Content-Encoding {enc!r} (identity or gzip)", ctype, close=True)
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._error(413, f"body of {length} bytes exceeds {self.max_body}", ctype, close=True)
        busy = {"Retry-After": str(self.retry_after_s)}
        try:
            data = await self._read_body(request, length, enc, held)
        except PayloadError as exc:
            if exc.status == 408:
                self._count(timeouts=1)
            return self._error(exc.status, str(exc), ctype, close=True)
        except _Busy:
            self._count(refused_busy=1)
            return self._error(503, "memory budget for requests in flight is full, retry later", ctype, busy, True)
        loop = asyncio.get_running_loop()
        peer = request.remote or "?"
        try:
            if len(data) <= SMALL_BODY:
                cols = await loop.run_in_executor(self._lanes["small"], parse_payload, data, ctype, f"otlp-http {peer}")
            else:
                cols = await self._parse_large(data, ctype, f"otlp-http {peer}")
        except PayloadError as exc:
            return self._error(exc.status, str(exc), ctype)
        except MemoryError:
            self._count(refused_busy=1)
            return self._error(503, "out of memory while parsing, retry later", ctype, busy)
        del data
        if len(cols) == 0 and cols.rejected:
            self._merge(cols)
            self._count(rejected_spans=cols.rejected)
            return self._error(400, "no valid span: " + _summary(cols.problems), ctype)
        if len(cols) == 0:
            self._merge(cols)
            return self._ok(ctype, 0, cols.problems)
        job = _Job(cols)
        fut = loop.create_future()
        job.done_cb = lambda: loop.call_soon_threadsafe(_resolve, fut)
        try:
            self.queue.put_nowait((0 if len(cols) <= PIECE_SPANS else 1, next(self._seq), job))
        except queue.Full:
            self._count(refused_busy=1)
            return self._error(503, "ingest queue full, retry later", ctype, busy)
        await asyncio.shield(fut)
        if job.error:
            return self._error(503, f"store write failed: {job.error}", ctype, busy)
        rejected = cols.rejected + job.rejected
        self._count(accepted_spans=job.stored, rejected_spans=rejected)
        self._merge(cols)
        if job.stored == 0:
            return self._error(400, "no span could be stored: " + _summary(cols.problems), ctype)
        return self._ok(ctype, rejected, cols.problems)

    async def _parse_large(self, data: bytes, ctype: str, source: str) -> SpanColumns:
        """A large body is parsed in a worker process (parsing is pure Python: in a thread it would hold the
        GIL for seconds, and every small request would wait for it); in a thread when no process can start."""
        loop = asyncio.get_running_loop()
        if self._process is None and not self._process_broken:
            try:
                from concurrent.futures import ProcessPoolExecutor
                from multiprocessing import get_context

                self._process = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
            except (OSError, ValueError, RuntimeError):
                self._process_broken = True
        if self._process is not None:
            try:
                return await loop.run_in_executor(self._process, parse_payload, data, ctype, source)
            except PayloadError:
                raise
            except Exception:  # noqa: BLE001  a broken or killed worker: this request is parsed here
                self._process_broken = True
                self._process.shutdown(wait=False, cancel_futures=True)
                self._process = None
        return await loop.run_in_executor(self._lanes["large"], parse_payload, data, ctype, source)

    def _merge(self, cols: SpanColumns) -> None:
        with self._lock:
            self.problems.merge(cols.problems)

    async def _read_body(self, request, length: int | None, enc: str, held: list) -> bytes:
        """The decoded body, read as it streams, each piece counted against the budget before it is kept."""
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        gz = enc == "gzip"
        upfront = length if (length is not None and not gz) else 0
        if upfront:
            if not self.budget.take(upfront, small=upfront <= SMALL_BODY):
                raise _Busy()
            held[0] += upfront

        def reserve(n: int) -> None:  # gzip output, step by step (called in the inflating thread)
            if not self.budget.take(n, small=decoder.total <= SMALL_BODY):
                raise _Busy()
            held[0] += n

        decoder = _StreamDecoder("gzip" if gz else "identity", MAX_DECODED, reserve if gz else None)
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
                out = await loop.run_in_executor(self._lanes["inflate"], decoder.feed, chunk)
            else:
                out = decoder.feed(chunk)
                if decoder.total > upfront:  # beyond what was reserved up front (chunked: all of it)
                    if not self.budget.take(decoder.total - upfront, small=decoder.total <= SMALL_BODY):
                        raise _Busy()
                    held[0] += decoder.total - upfront
                    upfront = decoder.total
            if out:
                parts.append(out)
        decoder.finish()
        if length is not None and wire != length:
            raise PayloadError(400, f"body of {wire} bytes, Content-Length said {length}")
        return b"".join(parts)

    def _ok(self, ctype: str, rejected: int, problems: Problems):
        from aiohttp import web

        msg = _summary(problems)
        if ctype in PROTO_TYPES:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

            resp = ExportTraceServiceResponse()
            if rejected:
                resp.partial_success.rejected_spans = rejected
                resp.partial_success.error_message = msg
            return web.Response(status=200, body=resp.SerializeToString(), content_type="application/x-protobuf")
        body = {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": msg}} if rejected else {}
        return web.Response(status=200, body=orjson.dumps(body), content_type="application/json")


def _pieces(cols: SpanColumns, size: int) -> list[SpanColumns]:
    """``cols`` in pieces of ``size`` spans, each with the events of its spans (sharing the problems)."""
    keys = list(zip(cols.spans["trace_id"], cols.spans["span_id"]))
    piece_of = {}
    for i, k in enumerate(keys):
        piece_of.setdefault(k, i // size)
    out = []
    for start in range(0, len(keys), size):
        p = SpanColumns(cols.source, cols.problems)
        p.spans = {c: v[start:start + size] for c, v in cols.spans.items()}
        p.events = {c: [] for c in cols.events}
        out.append(p)
    for j, k in enumerate(zip(cols.events["trace_id"], cols.events["span_id"])):
        ev = out[piece_of.get(k, 0)].events
        for c, v in cols.events.items():
            ev[c].append(v[j])
    return out


def _resolve(fut) -> None:
    if not fut.done():
        fut.set_result(None)


def _summary(problems: Problems) -> str:
    return "; ".join(f"{p['where']}: {p['message']}" for p in problems.items[:5])


def wait_until(pred, timeout: float = 10.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def _in_transaction(con, work):
    """``work()`` inside one transaction on a connection the caller already holds (``Store.writer``)."""
    con.execute("BEGIN TRANSACTION")
    try:
        out = work()
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return out
