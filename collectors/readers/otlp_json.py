"""OTLP JSON traces: JSON lines as the Collector's file exporter writes them (one ExportTraceServiceRequest
per line), or one request as a single document.

JSON lines stream in chunks: the Arrow path (``otlp_lines_arrow``) loads each chunk it can load exactly, the
exact path (``otlp_lines_exact``, in worker processes for a large file) the others. A single document is read
whole by the tolerant reader (``otlp_document``); a truncated one is salvaged up to the damage. Small files of
JSON lines are decoded on their own and loaded together (``small_lines``, ``collectors.small_files``).
"""
from __future__ import annotations

import orjson

from .. import otlp_lines_arrow, otlp_lines_exact, streams
from ..otlp_document import parse_request, unwrap
from ..parallel import Pool
from ..salvage import read_document
from ..small_files import SMALL_FILE_BYTES
from ..sniff import looks_json
from ..spans import SpanSink

FORMAT = "otlp-json"


def sniff(head: bytes, size: int) -> bool:
    return looks_json(head) and b'"resourceSpans"' in head


def _first_line_is_json(data: bytes) -> bool:
    try:
        orjson.loads(data.split(b"\n", 1)[0])
    except orjson.JSONDecodeError:
        return False
    return True


def read(src: streams.Source, sink: SpanSink, pool: Pool, progress=None) -> int:
    """Read into the sink: streamed when the source is JSON lines, whole otherwise. No samples."""
    first = streams.peek(src, streams.CHUNK_BYTES)
    if not _first_line_is_json(first):  # a document spread over lines
        doc = read_document(src, sink.problems, kept="spans")
        req = unwrap(doc) if doc is not None else None
        if doc is not None and req is None:
            sink.problems.add(sink.source, "offset 0", "JSON document has no resourceSpans")
        if req is not None:
            parse_request(req, sink, "")
        return 0
    chunks = otlp_lines_arrow.load_fitting(streams.line_chunks(src, otlp_lines_arrow.CHUNK_BYTES), sink, progress)
    otlp_lines_exact.load_chunks(chunks, sink, pool, progress,
                                 parallel=len(first) >= otlp_lines_exact.PARALLEL_MIN_BYTES)
    return 0


def small_lines(src: streams.Source, head: bytes, size: int) -> bytes | None:
    """The whole decompressed content of a small file of JSON lines, to be loaded with the other small files,
    or None (a large file or a single document: the stream is left at its start for ``read``)."""
    if src.compression is None and size > SMALL_FILE_BYTES:
        return None
    if src.compression is None and len(head) == size:
        data = head  # the head is the whole file
    else:
        data = streams.read_exact(src, SMALL_FILE_BYTES + 1)
        if len(data) > SMALL_FILE_BYTES:
            streams.rewind(src)
            return None
    if not _first_line_is_json(data):  # JSON lines (a document spread over lines is read whole)
        streams.rewind(src)
        return None
    return data
