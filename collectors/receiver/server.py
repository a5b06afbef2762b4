"""The OTLP/HTTP trace receiver: ``POST /v1/traces`` with protobuf or JSON bodies, gzip-encoded or not, sized by
``Content-Length`` or chunked.

Answers as the OTLP specification says: 200 (with ``partial_success`` when some spans were rejected), 400 for
input that will never succeed (undecodable, wrong shape, values the store cannot hold, nothing valid), 401
without the bearer token when one is required, 408 for a body that does not arrive in time, 413 when the body
(or what it decompresses to) is too large, 415 for an unsupported type or encoding, and 503 with
``Retry-After`` only for load (the memory budget or the ingest queue is full). A request is answered 200 only
after its spans are committed to the store, so every acknowledged span is in the store.

The server is aiohttp's (an asyncio HTTP/1.1 stack: chunked bodies, keep-alive, header size limits) on one
event-loop thread. Around it: the connection cap and the budget of decoded bytes (admission.py), the bodies'
decoding and parsing (payloads.py), the single writer to the store (writer.py), and where it listens and who
may send (listen.py).
"""
from __future__ import annotations

import asyncio
import hmac
import queue
import threading
import time
from dataclasses import dataclass

import orjson

from ..problems import Problems
from ..store import Store
from .admission import (BODY_TIMEOUT_S, BUDGET, IDLE_TIMEOUT_S, MAX_BODY, MAX_CONNECTIONS, READ_TIMEOUT_S,
                        SMALL_RESERVE, Bodies, Budget, Busy, Connections, connection_cap)
from .listen import DEFAULT_PORT, ListenError, bind, exposure, resolve_host, tls_context
from .payloads import JSON_TYPES, MAX_DECODED, PROTO_TYPES, Parsers, PayloadError
from .writer import Job, Writer


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
        self._writer = Writer(store, staging, queue_size, clock=lambda: self.clock(), count=self.count,
                              problem=self._problem)
        self.queue = self._writer.queue
        self.retry_after_s = retry_after_s
        self.max_body = max_body
        self.stats = ReceiverStats()
        self.problems = Problems()
        self._lock = threading.Lock()
        self.token = token
        self.idle_timeout_s, self.body_timeout_s = idle_timeout_s, body_timeout_s
        self.budget = Budget(budget_bytes, SMALL_RESERVE)
        self.bodies = Bodies(self.budget, max_body, read_timeout_s, body_timeout_s)
        self.max_connections = connection_cap(max_connections)
        self._ssl = tls_context(tls_cert, tls_key) if tls_cert else None
        if tls_key and not tls_cert:
            raise ListenError("--otlp-tls-key needs --otlp-tls-cert")
        # checked before binding: nothing listens on a reachable address without TLS and a token
        self.warning = exposure(resolve_host(host, port), tls=self._ssl is not None, token=token, insecure=insecure)
        self._sock = bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self.connections = Connections(self._sock, self.max_connections, self._ssl, self.count)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._parsers = Parsers()

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}/v1/traces"

    @staticmethod
    def clock() -> int:
        """The clock arrivals are stamped with (monotonic: a wall-clock step must not release or hold traces)."""
        return time.monotonic_ns()

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
        self._closed = self.connections.closed = True
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self._threads:
            t.join()
        self._threads = []
        self._writer.stop()  # the writer finishes what was acknowledged before it exits
        self.bodies.shutdown()
        self._parsers.shutdown()
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

        connections = self.connections

        class Server(web.Server):
            """aiohttp's server with a connection cap: at the cap, the longest-idle connection makes room."""

            def __call__(self):
                handler = super().__call__()
                connections.admit(handler)
                return handler

            def connection_lost(self, handler, exc=None):
                connections.lost(handler)
                super().connection_lost(handler, exc)

        import logging

        receiver = self

        class Counting(logging.Handler):
            """aiohttp answers a malformed request itself (400) and logs it with a traceback: counted here,
            never printed (the terminal belongs to the TUI or the report)."""

            def emit(self, record):
                if record.levelno >= logging.ERROR:
                    receiver.count(bad_requests=1)

        quiet = logging.Logger("triage.otlp.server")  # not in the logging tree: nothing propagates to the root
        quiet.addHandler(Counting())
        self._server = Server(self._handle, keepalive_timeout=self.idle_timeout_s, auto_decompress=False,
                              access_log=None, max_line_size=8190, max_field_size=8190, max_headers=64,
                              lingering_time=0, handler_cancellation=False, logger=quiet)
        connections.start(self._server)

    async def _shutdown(self) -> None:
        self.connections.stop_accepting()
        self._server.pre_shutdown()
        await self._server.shutdown(timeout=self.body_timeout_s)
        self.connections.close_all()

    # -- what the receiver met ------------------------------------------------------------------
    def count(self, **kw) -> None:
        """Add to the receiver's counters (``stats``), from any thread."""
        with self._lock:
            for k, v in kw.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _problem(self, where: str, message: str) -> None:
        with self._lock:
            self.problems.add("otlp-http", where, message)

    def _merge(self, cols) -> None:
        with self._lock:
            self.problems.merge(cols.problems)

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

    # -- requests -------------------------------------------------------------------------------
    async def _handle(self, request):
        act = self.connections.busy(request.protocol)
        held = [0]
        try:
            return await self._handle_request(request, held)
        finally:
            if held[0]:
                self.budget.give(held[0])
            self.connections.idle(act)

    def _error(self, status: int, message: str, ctype: str, headers: dict | None = None, close: bool = False):
        from aiohttp import web

        if status == 400 or status in (408, 413, 415):
            self.count(bad_requests=1)
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
        self.count(requests=1)
        if request.path != "/v1/traces":
            return self._error(404, f"no such endpoint {request.path}", ctype, close=True)
        if request.method != "POST":
            return self._error(405, f"{request.method} is not allowed; POST spans", ctype, {"Allow": "POST"}, True)
        if self.token is not None and not self._authorized(request):
            self.count(unauthorized=1)
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
            data = await self.bodies.read(request, length, enc, held)
        except PayloadError as exc:
            if exc.status == 408:
                self.count(timeouts=1)
            return self._error(exc.status, str(exc), ctype, close=True)
        except Busy:
            self.count(refused_busy=1)
            return self._error(503, "memory budget for requests in flight is full, retry later", ctype, busy, True)
        loop = asyncio.get_running_loop()
        peer = request.remote or "?"
        try:
            cols = await self._parsers.parse(data, ctype, f"otlp-http {peer}")
        except PayloadError as exc:
            return self._error(exc.status, str(exc), ctype)
        except MemoryError:
            self.count(refused_busy=1)
            return self._error(503, "out of memory while parsing, retry later", ctype, busy)
        del data
        if len(cols) == 0 and cols.rejected:
            self._merge(cols)
            self.count(rejected_spans=cols.rejected)
            return self._error(400, "no valid span: " + _summary(cols.problems), ctype)
        if len(cols) == 0:
            self._merge(cols)
            return self._ok(ctype, 0, cols.problems)
        job = Job(cols)
        fut = loop.create_future()
        job.done_cb = lambda: loop.call_soon_threadsafe(_resolve, fut)
        try:
            self._writer.submit(job)
        except queue.Full:
            self.count(refused_busy=1)
            return self._error(503, "ingest queue full, retry later", ctype, busy)
        await asyncio.shield(fut)
        if job.error:
            return self._error(503, f"store write failed: {job.error}", ctype, busy)
        rejected = cols.rejected + job.rejected
        self.count(accepted_spans=job.stored, rejected_spans=rejected)
        self._merge(cols)
        if job.stored == 0:
            return self._error(400, "no span could be stored: " + _summary(cols.problems), ctype)
        return self._ok(ctype, rejected, cols.problems)

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


def _resolve(fut) -> None:
    if not fut.done():
        fut.set_result(None)


def _summary(problems: Problems) -> str:
    return "; ".join(f"{p['where']}: {p['message']}" for p in problems.items[:5])


def wait_until(pred, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``pred()`` until it holds or ``timeout`` seconds have passed (e.g. until an exporter's spans are in
    the store); returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()
