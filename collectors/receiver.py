"""OTLP/HTTP trace receiver: ``POST /v1/traces`` with protobuf or JSON bodies, optionally gzip-encoded.

Answers as the OTLP specification says: 200 (with ``partial_success`` when some spans were rejected),
400 for a payload that cannot be decoded, 413 when the body (or what it decompresses to) is too large,
415 for an unsupported content type, 503 with ``Retry-After`` when the ingest queue is full.
One bounded queue feeds one writer thread; a request is answered 200 only after its spans are committed
to the store, so every acknowledged span is in the store. Binds 127.0.0.1 by default.

With ``staging=True`` (live sessions) spans land in ``pending_spans`` / ``pending_events`` with their arrival
time, and ``promote()`` moves a trace into ``spans`` / ``span_events`` once no span of it has arrived for a
while. Services export in batches (the OpenTelemetry SDK's batch processor every 5 s by default, Triton
likewise), so a request's downstream spans often arrive seconds after its root; analysed before they arrive,
the request would look as if it never queued or computed.
"""
from __future__ import annotations

import queue
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import orjson

from . import otlp_json, otlp_proto
from .problems import Problems
from .spans import SpanColumns
from .store import EVENT_COLUMNS, SPAN_COLUMNS, Store, insert_frame

MAX_BODY = 16 << 20          # compressed or not, what we accept on the wire
MAX_DECODED = 64 << 20       # what a body may decompress to (decompression bombs stop here)
PROTO_TYPES = {"application/x-protobuf", "application/protobuf"}
JSON_TYPES = {"application/json"}


class PayloadError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_body(body: bytes, encoding: str | None) -> bytes:
    enc = (encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return body
    if enc != "gzip":
        raise PayloadError(415, f"unsupported Content-Encoding {encoding!r} (identity or gzip)")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, MAX_DECODED + 1)
    except zlib.error as exc:
        raise PayloadError(400, f"invalid gzip body: {exc}") from exc
    if len(out) > MAX_DECODED or d.unconsumed_tail:
        raise PayloadError(413, f"body decompresses to more than {MAX_DECODED} bytes")
    if not d.eof:
        raise PayloadError(400, "truncated gzip body")
    return out


def parse_payload(data: bytes, content_type: str, source: str) -> SpanColumns:
    cols = SpanColumns(source)
    if content_type in PROTO_TYPES:
        try:
            req = otlp_proto.parse(data)
        except ValueError as exc:
            raise PayloadError(400, str(exc)) from exc
        otlp_proto.parse_request(req, cols, "")
    else:
        try:
            doc = otlp_json.unwrap(orjson.loads(data))
        except orjson.JSONDecodeError as exc:
            raise PayloadError(400, f"invalid JSON: {exc}") from exc
        if doc is None:
            raise PayloadError(400, "JSON body has no resourceSpans")
        otlp_json.parse_request(doc, cols, "")
    return cols


@dataclass
class _Job:
    cols: SpanColumns
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


@dataclass
class ReceiverStats:
    requests: int = 0
    accepted_spans: int = 0
    rejected_spans: int = 0
    refused_busy: int = 0
    bad_requests: int = 0


class Receiver:
    """The server and its single writer. ``start()`` / ``stop()``; ``port`` is the bound port."""

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 4318, queue_size: int = 64,
                 retry_after_s: int = 1, max_body: int = MAX_BODY, staging: bool = False):
        self.store = store
        self.staging = staging
        if staging:
            for table, like in (("pending_spans", "spans"), ("pending_events", "span_events")):
                store.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT *, 0::BIGINT AS arrived_ns "
                              f"FROM {like} LIMIT 0")
        self.queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.retry_after_s = retry_after_s
        self.max_body = max_body
        self.stats = ReceiverStats()
        self.problems = Problems()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._threads: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/v1/traces"

    def start(self) -> "Receiver":
        for target in (self._server.serve_forever, self._write_loop):
            t = threading.Thread(target=target, daemon=True, name=f"otlp-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.queue.put(None)
        for t in self._threads:  # the writer finishes what was acknowledged before it exits
            t.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _write_loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            try:
                self._write(job.cols)
            except Exception as exc:  # the client hears about it (503) rather than losing spans silently
                job.error = f"{type(exc).__name__}: {exc}"
            finally:
                job.done.set()

    def _write(self, cols: SpanColumns) -> None:
        """One request's spans and events, both or neither (a 503 makes the client send them again)."""
        with self.store.transaction() as con:
            if not self.staging:
                insert_frame(con, "spans", SPAN_COLUMNS, cols.spans)
                insert_frame(con, "span_events", EVENT_COLUMNS, cols.events)
                return
            now = self.clock()  # stamped once the writer holds the store: waiting for it is not settling time
            for table, names, data in (("pending_spans", SPAN_COLUMNS, cols.spans),
                                       ("pending_events", EVENT_COLUMNS, cols.events)):
                arrived = np.full(len(data[names[0]]), now, dtype=np.int64)
                insert_frame(con, table, names + ("arrived_ns",), {**data, "arrived_ns": arrived})

    def promote(self, idle_s: float | None = None, max_hold_s: float | None = None,
                begun_by_ns: int | None = None) -> int:
        """Move staged traces into ``spans`` / ``span_events`` in one transaction: those that have had no new
        span for ``idle_s`` seconds or whose first span came more than ``max_hold_s`` ago (a trace that keeps
        growing is not held back for ever); with ``begun_by_ns`` (a ``clock()`` reading) instead, those whose
        first span had arrived by then; all of them when neither is given. Returns the spans moved."""
        if not self.staging:
            return 0
        span_cols, event_cols = ", ".join(SPAN_COLUMNS), ", ".join(EVENT_COLUMNS)
        with self.store.transaction() as con:
            now = self.clock()
            having = ""
            if begun_by_ns is not None:
                having = f"HAVING min(arrived_ns) <= {int(begun_by_ns)}"
            elif idle_s is not None:
                having = f"HAVING max(arrived_ns) <= {now - int(idle_s * 1e9)}"
                if max_hold_s is not None:
                    having += f" OR min(arrived_ns) <= {now - int(max_hold_s * 1e9)}"
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _settled AS SELECT trace_id FROM pending_spans
                            GROUP BY trace_id {having}""")
            moved = con.execute(f"""INSERT INTO spans ({span_cols}) SELECT {span_cols} FROM pending_spans
                                    WHERE trace_id IN (SELECT trace_id FROM _settled)""").fetchone()[0]
            con.execute(f"""INSERT INTO span_events ({event_cols}) SELECT {event_cols} FROM pending_events
                            WHERE trace_id IN (SELECT trace_id FROM _settled)""")
            for table in ("pending_spans", "pending_events"):
                con.execute(f"DELETE FROM {table} WHERE trace_id IN (SELECT trace_id FROM _settled)")
            con.execute("DROP TABLE _settled")
        return int(moved)

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

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "triage-otlp/1"
            disable_nagle_algorithm = True  # headers and body are separate writes: avoid the delayed-ACK stall

            def log_message(self, *args):  # quiet: the TUI owns the terminal
                pass

            def _reply(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str, ctype: str, extra: dict | None = None) -> None:
                if ctype in PROTO_TYPES:
                    from google.rpc import status_pb2

                    body = status_pb2.Status(code=3 if status == 400 else 8 if status in (429, 503) else 2,
                                             message=message).SerializeToString()
                    self._reply(status, body, "application/x-protobuf", extra)
                else:
                    self._reply(status, orjson.dumps({"code": status, "message": message}), "application/json", extra)

            def do_POST(self):  # noqa: N802
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                receiver._count(requests=1)
                length = int(self.headers.get("Content-Length") or 0)
                if self.path.split("?")[0] != "/v1/traces":
                    self._drain(length)
                    return self._error(404, f"no such endpoint {self.path}", ctype)
                if length > receiver.max_body:
                    self.close_connection = True
                    receiver._count(bad_requests=1)
                    return self._error(413, f"body of {length} bytes exceeds {receiver.max_body}", ctype)
                body = self.rfile.read(length) if length else b""
                if ctype not in PROTO_TYPES and ctype not in JSON_TYPES:
                    receiver._count(bad_requests=1)
                    return self._error(415, f"unsupported Content-Type {ctype!r}", "application/json")
                try:
                    data = decode_body(body, self.headers.get("Content-Encoding"))
                    cols = parse_payload(data, ctype, f"otlp-http {self.client_address[0]}")
                except PayloadError as exc:
                    receiver._count(bad_requests=1)
                    return self._error(exc.status, str(exc), ctype)
                job = _Job(cols)
                try:
                    receiver.queue.put_nowait(job)
                except queue.Full:
                    receiver._count(refused_busy=1)
                    return self._error(503, "ingest queue full, retry later", ctype,
                                       {"Retry-After": str(receiver.retry_after_s)})
                job.done.wait()
                if job.error:
                    return self._error(503, f"store write failed: {job.error}", ctype,
                                       {"Retry-After": str(receiver.retry_after_s)})
                rejected = cols.rejected
                receiver._count(accepted_spans=len(cols), rejected_spans=rejected)
                receiver.problems.merge(cols.problems)
                self._ok(ctype, rejected, cols.problems)

            def _ok(self, ctype: str, rejected: int, problems: Problems) -> None:
                msg = "; ".join(f"{p['where']}: {p['message']}" for p in problems.items[:5])
                if ctype in PROTO_TYPES:
                    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

                    resp = ExportTraceServiceResponse()
                    if rejected:
                        resp.partial_success.rejected_spans = rejected
                        resp.partial_success.error_message = msg
                    self._reply(200, resp.SerializeToString(), "application/x-protobuf")
                else:
                    body = {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": msg}} if rejected else {}
                    self._reply(200, orjson.dumps(body), "application/json")

            def _drain(self, length: int) -> None:
                if 0 < length <= receiver.max_body:
                    self.rfile.read(length)

        return Handler


def wait_until(pred, timeout: float = 10.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()
