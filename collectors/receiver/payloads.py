"""The bodies of OTLP/HTTP requests: decoded as they stream (identity or gzip, multi-member gzip included, capped
at ``MAX_DECODED`` and inflated in budgeted steps), and parsed into span columns (protobuf or JSON), off the
event loop in two lanes: small bodies in a thread, large ones in a worker process.

Every error is a ``PayloadError`` carrying the HTTP status to answer: 400 for bytes that will never be a
request (undecodable, wrong shape, values that cannot be converted), 413 for too large, 415 for an
unsupported encoding."""
from __future__ import annotations

import asyncio
import zlib
from concurrent.futures import ThreadPoolExecutor

import duckdb
import orjson

from .. import otlp_document, otlp_proto
from ..spans import SpanColumns

MAX_DECODED = 64 << 20       # what a body may decompress to (decompression bombs stop here)
SMALL_BODY = 1 << 20         # a small request: its own parse lane, its own slice of the budget
INFLATE_STEP = 1 << 20       # gzip is inflated (off the event loop) this much at a time, each step budgeted
PROTO_TYPES = {"application/x-protobuf", "application/protobuf"}
JSON_TYPES = {"application/json"}
# Errors that say the data cannot be stored (out-of-range values, wrong types), not that the store failed:
# the batch is answered 400 / partial success, never with a retry the exporter would repeat for ever.
DATA_ERRORS = (duckdb.DataError, duckdb.InvalidInputException, duckdb.TypeMismatchException,
               OverflowError, ValueError, TypeError)


class PayloadError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class StreamDecoder:
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


class Parsers:
    """Where bodies are parsed, off the event loop: small ones (<= ``SMALL_BODY``) in a thread of their own, so
    they never wait behind a large one; large ones in a worker process (parsing is pure Python: in a thread it
    would hold the GIL for seconds, and every small request would wait for it), in a thread when no process
    can start."""

    def __init__(self):
        self._process = None  # the large lane's worker process, started on the first large body
        self._process_broken = False
        self._small = ThreadPoolExecutor(1, thread_name_prefix="otlp-parse-small")
        self._large = ThreadPoolExecutor(1, thread_name_prefix="otlp-parse-large")

    async def parse(self, data: bytes, ctype: str, source: str) -> SpanColumns:
        loop = asyncio.get_running_loop()
        if len(data) <= SMALL_BODY:
            return await loop.run_in_executor(self._small, parse_payload, data, ctype, source)
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
        return await loop.run_in_executor(self._large, parse_payload, data, ctype, source)

    def shutdown(self) -> None:
        """Wait for the parses in progress; stop the worker process."""
        self._small.shutdown(wait=True)
        self._large.shutdown(wait=True)
        if self._process is not None:
            self._process.shutdown(wait=True, cancel_futures=True)
            self._process = None
