"""OTLP JSON traces: one ExportTraceServiceRequest object, JSON lines as the Collector's file exporter
writes them, the legacy ``instrumentationLibrarySpans`` name, and the ``{"result": ...}`` wrapper of
Jaeger's API v3.

Ids are hex (Tempo's base64 is accepted too); 64-bit integers may be strings or numbers; enums may be
ints or names. protobuf's ``json_format`` is deliberately not used: it decodes hex ids as base64.
JSON lines stream in chunks: through Arrow (``otlp_arrow``) when a chunk loads exactly, else through msgspec in
worker processes (``otlp_fast``); a single document is read whole (a truncated one is salvaged up to the
damage).
"""
from __future__ import annotations

import orjson

from . import streams
from .parallel import Pool
from .salvage import salvage
from .spans import SpanColumns, SpanSink, _as_int, resource_columns

SPAN_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
              "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
PARALLEL_MIN_BYTES = 4 << 20
# Chunks converted by Arrow at once, in threads, while the previous one is written (memory: ~4x chunk each).
ARROW_THREADS = 2


def any_value(v):
    """Decode an OTLP JSON AnyValue into a Python value."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return v["intValue"]
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError):
            return v["doubleValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in ((v["arrayValue"] or {}).get("values") or [])]
    if "kvlistValue" in v:
        return attributes((v["kvlistValue"] or {}).get("values"))
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def attributes(kvs) -> dict:
    out = {}
    if not isinstance(kvs, list):
        return out
    for kv in kvs:
        if isinstance(kv, dict) and "key" in kv:
            v = kv.get("value")
            if isinstance(v, dict) and "stringValue" in v:  # the common case, inline
                out[str(kv["key"])] = v["stringValue"]
            else:
                out[str(kv["key"])] = any_value(v)
    return out


def _enum(value, names: dict) -> int:
    if isinstance(value, str):
        if value in names:
            return names[value]
        try:
            return int(value)
        except ValueError:
            return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        iv = _as_int(value)  # NaN and infinities are not enums; the range is checked in SpanColumns.add
        return 0 if iv is None else iv
    return 0


def unwrap(doc):
    """The ExportTraceServiceRequest inside a document, or None when it is not one."""
    if isinstance(doc, dict) and "result" in doc and isinstance(doc["result"], dict):
        doc = doc["result"]
    if isinstance(doc, dict) and "resourceSpans" in doc:
        return doc
    return None


def parse_request(doc: dict, cols: SpanColumns, where: str) -> int:
    """Feed the spans of one ExportTraceServiceRequest (as decoded JSON) to the columns."""
    n = 0
    rss = doc.get("resourceSpans")
    if not isinstance(rss, list):
        cols.problems.add(cols.source, f"{where} resourceSpans", "not a list")
        return 0
    for i, rs in enumerate(rss):
        if not isinstance(rs, dict):
            cols.problems.add(cols.source, f"{where} resourceSpans[{i}]", "not an object")
            continue
        service, rjson = resource_columns(attributes(
            (rs.get("resource") or {}).get("attributes") if isinstance(rs.get("resource"), dict) else None))
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
        if not isinstance(scopes, list):  # a wrong shape drops what it holds: counted as rejected, not silent
            _wrong_shape(cols, f"{where} resourceSpans[{i}].scopeSpans", scopes, "scopeSpans is not a list")
            continue
        for j, ss in enumerate(scopes):
            if not isinstance(ss, dict):
                _wrong_shape(cols, f"{where} resourceSpans[{i}].scopeSpans[{j}]", ss, "scope is not an object")
                continue
            spans = ss.get("spans")
            if spans is not None and not isinstance(spans, list):
                _wrong_shape(cols, f"{where} resourceSpans[{i}].scopeSpans[{j}].spans", spans, "spans is not a list")
                continue
            for k, sp in enumerate(spans or []):
                def loc(i=i, j=j, k=k):
                    return f"{where} resourceSpans[{i}].scopeSpans[{j}].spans[{k}]".strip()
                if not isinstance(sp, dict):
                    cols.problems.add(cols.source, loc(), "span is not an object")
                    cols.rejected += 1
                    continue
                n += add_span(cols, sp, service, rjson, loc)
    return n


def _wrong_shape(cols: SpanColumns, where: str, value, message: str) -> None:
    """A container of the wrong type: its spans (as many as can be seen in it, at least one) are rejected."""
    inner = value.get("spans") if isinstance(value, dict) else None
    n = len(inner) if isinstance(inner, list) else 1
    cols.problems.add(cols.source, where.strip(), f"{message} ({type(value).__name__}); {n} span(s) dropped")
    cols.rejected += n


def add_span(cols: SpanColumns, sp: dict, service: str | None, rjson: str, where) -> bool:
    """One OTLP JSON span object into ``cols`` (the tolerant reader: any field may be missing or wrong)."""
    status = sp.get("status")
    status = status if isinstance(status, dict) else {}
    evs = sp.get("events")
    events = [(e.get("name", ""), e.get("timeUnixNano"), attributes(e.get("attributes")))
              for e in evs if isinstance(e, dict)] if isinstance(evs, list) else ()
    return cols.add(
        sp.get("traceId"), sp.get("spanId"), sp.get("parentSpanId"), service, rjson,
        sp.get("name", ""), _enum(sp.get("kind"), SPAN_KINDS),
        sp.get("startTimeUnixNano"), sp.get("endTimeUnixNano"),
        _enum(status.get("code"), STATUS_CODES), status.get("message"),
        attributes(sp.get("attributes")), events, where)


def read(src: streams.Source, sink: SpanSink, pool: Pool, progress=None) -> None:
    """Read an OTLP JSON source into the sink: streamed when it is JSON lines, whole otherwise."""
    first = streams.peek(src, streams.CHUNK_BYTES)
    first_line = first.split(b"\n", 1)[0]
    try:
        orjson.loads(first_line)
        lines_mode = True
    except orjson.JSONDecodeError:
        lines_mode = False
    if not lines_mode:
        data = streams.read_all(src, text=True)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            doc = salvage(data)
            sink.problems.add(sink.source, f"offset {getattr(exc, 'pos', '?')}",
                              f"invalid JSON ({exc}); " + ("loaded the spans before the damage" if doc is not None
                                                           else "nothing recoverable"))
        req = unwrap(doc) if doc is not None else None
        if doc is not None and req is None:
            sink.problems.add(sink.source, "offset 0", "JSON document has no resourceSpans")
        if req is not None:
            parse_request(req, sink, "")
        sink.flush()
        return
    from . import otlp_arrow, otlp_fast

    if otlp_arrow.available():
        chunks = _arrow_first(streams.line_chunks(src, otlp_arrow.CHUNK_BYTES), sink, progress)
    else:
        chunks = streams.line_chunks(src)
    if len(first) < PARALLEL_MIN_BYTES or pool.workers <= 1:  # small: a pool would cost more than it saves
        for c, n in chunks:
            batch = otlp_fast.decode_lines(c, sink.source, n)
            sink.spans_written += otlp_fast.write(sink.store, batch)
            sink.problems.merge(batch.problems)
            if progress:
                progress()
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="triage-ingest-") as tmp:
        for staged in pool.map(otlp_fast.decode_to_parquet, ((c, sink.source, n, tmp) for c, n in chunks)):
            sink.spans_written += otlp_fast.load_staged(sink.store, staged)
            sink.problems.merge(staged.problems)
            if progress:
                progress()


def _arrow_first(chunks, sink: SpanSink, progress):
    """Load each chunk with the Arrow path when it fits exactly; yield the others for the msgspec path
    (which reports their problems by line). Arrow converts the next chunk in a background thread while this
    one is written to DuckDB (both release the GIL), so parsing and writing overlap."""
    from concurrent.futures import ThreadPoolExecutor

    from . import otlp_arrow

    def convert(item):
        chunk, first_line = item
        if len(chunk) < otlp_arrow.MIN_CHUNK_BYTES:
            return item, None
        try:
            return item, otlp_arrow.prepare(chunk, sink.source)
        except Exception:  # anything Arrow did not expect: the exact path reads the chunk and explains it
            return item, None

    from collections import deque

    with ThreadPoolExecutor(ARROW_THREADS, thread_name_prefix="triage-arrow") as ex:
        pending: deque = deque()
        for item in chunks:
            pending.append(ex.submit(convert, item))
            if len(pending) > ARROW_THREADS:
                yield from _write_prepared(pending.popleft().result(), sink, progress)
        while pending:
            yield from _write_prepared(pending.popleft().result(), sink, progress)


def _write_prepared(result, sink: SpanSink, progress):
    from . import otlp_arrow

    item, prepared = result
    if prepared is None:
        yield item
        return
    try:
        with sink.store.transaction() as con:
            written = otlp_arrow.write(con, prepared)
    except Exception:  # nothing of the chunk stays; the exact path reads it and explains any problem
        written = None
    if written is None:
        yield item
        return
    sink.spans_written += written
    if progress:
        progress()
