"""The fast path for OTLP JSON lines: Apache Arrow's multi-threaded JSON reader parses a chunk of lines
against the OTLP trace schema (the fields triage reads; the exact path ignores the same others), Arrow
kernels flatten it and build the store's columns, and DuckDB inserts them from Arrow without a Python loop
over spans. Attribute values outside the common case are rendered by the OTLP model's SQL macros
(``otlp_model.sql_macros(arrow=True)``).

It only takes a chunk that it can load exactly as the exact path (``otlp_lines_exact``) would. A line that
does not match the schema's types (enum names instead of numbers, numbers where OTLP JSON has strings, nested
arrays), ``NaN``, nulls in the tree, the ``result`` wrapper or the legacy layout, invalid UTF-8, an invalid
id, time or event time: any of these makes it refuse the whole chunk. ``prepare``/``load_chunk`` then return
None with nothing written, and ``load_fitting`` hands that chunk on to the exact path, which names the file
and line of every problem. So it changes speed, never results; ``tests/test_otlp_arrow.py`` checks that both
paths give identical rows.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import orjson

from .otlp_model import json_attributes, sql_macros
from .spans import (INT_PROMOTED, PROMOTED_COLUMNS, PROMOTED_PATHS, PROMOTED_SQL_TYPES, SpanSink, int_text_sql,
                    promoted_sql, resource_columns)

# A chunk below this size is not worth the Arrow round trip (fixed cost ~ a few ms).
MIN_CHUNK_BYTES = 256 << 10
CHUNK_BYTES = 32 << 20
# Chunks converted by Arrow at once, in threads, while the previous one is written (memory: ~4x chunk each).
ARROW_THREADS = 2


@functools.cache
def schema():
    """The fields of an OTLP ExportTraceServiceRequest that triage reads (the msgspec path reads the same;
    others are ignored by both), typed as the OTLP JSON encoding writes them: 64-bit integers as strings.
    AnyValue nests one level (arrays and key/value lists of scalars); deeper nesting is typed null, so that
    Arrow refuses the chunk and the msgspec path, which keeps it, takes it."""
    import pyarrow as pa

    s = pa.string()
    scalar = [("stringValue", s), ("boolValue", pa.bool_()), ("intValue", s), ("doubleValue", pa.float64()),
              ("bytesValue", s)]
    element = pa.struct(scalar + [("arrayValue", pa.null()), ("kvlistValue", pa.null())])
    any_value = pa.struct(scalar + [
        ("arrayValue", pa.struct([("values", pa.list_(element))])),
        ("kvlistValue", pa.struct([("values", pa.list_(pa.struct([("key", s), ("value", element)])))])),
    ])
    attrs = pa.list_(pa.struct([("key", s), ("value", any_value)]))
    event = pa.struct([("timeUnixNano", s), ("name", s), ("attributes", attrs)])
    span = pa.struct([
        ("traceId", s), ("spanId", s), ("parentSpanId", s), ("name", s), ("kind", pa.int64()),
        ("startTimeUnixNano", s), ("endTimeUnixNano", s), ("attributes", attrs), ("events", pa.list_(event)),
        ("status", pa.struct([("message", s), ("code", pa.int64())])),
    ])
    scope_spans = pa.list_(pa.struct([("spans", pa.list_(span))]))
    resource_spans = pa.list_(pa.struct([
        ("resource", pa.struct([("attributes", attrs)])),
        ("scopeSpans", scope_spans), ("instrumentationLibrarySpans", scope_spans)]))
    return pa.schema([("resourceSpans", resource_spans)])


MACROS = sql_macros(arrow=True)

# The general path, over the spans of one part (``otlp_arrow_spans``, already checked by ``_checked``) and
# the resources (``otlp_arrow_resources``): DuckDB renders the attributes with the macros above.
INSERT_SPANS = f"""
INSERT INTO spans
SELECT trace_id, span_id, parent_span_id, r.service, name, kind, start_ns, end_ns, end_ns - start_ns,
       status_code, status_message,
       {promoted_sql(strict=True)},
       attributes, r.resource, ?
FROM (
    SELECT *, json_extract_string(attributes, {PROMOTED_PATHS}) AS p FROM (
        SELECT lower(traceId) AS trace_id, lower(spanId) AS span_id, lower(nullif(parentSpanId, '')) AS parent_span_id,
               name, coalesce(kind, 0) AS kind, start_ns, end_ns, coalesce(status_code, 0) AS status_code,
               nullif(status_message, '') AS status_message, arrow_attrs_json(attributes) AS attributes, res
        FROM otlp_arrow_spans)
) f
JOIN otlp_arrow_resources r ON r.id = f.res
"""
INSERT_EVENTS = """
INSERT INTO span_events
SELECT lower(traceId), lower(spanId), e.name, CAST(e.timeUnixNano AS BIGINT),
       CASE WHEN len(e.attributes) > 0 THEN arrow_attrs_json(e.attributes) END
FROM (SELECT traceId, spanId, unnest(events) AS e FROM otlp_arrow_spans WHERE len(events) > 0)
"""


class Unfit(Exception):
    """The chunk cannot be loaded exactly by this path (the reason is for debugging, not a problem)."""


def parse(chunk: bytes):
    """A chunk of whole JSON lines → an Arrow table against the OTLP schema; raises Unfit."""
    import pyarrow as pa
    import pyarrow.json as pj

    if b"NaN" in chunk or b"Infinity" in chunk:  # Arrow's reader takes these non-JSON tokens; msgspec refuses
        raise Unfit("NaN or Infinity (not JSON), or the word in a string: the exact path decides")
    if not chunk.isascii():
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Unfit(f"invalid UTF-8 at byte {exc.start}") from None
    lines = chunk.count(b"\n") + 1
    block = max(4 << 20, 4 * (len(chunk) // lines))
    opts = pj.ParseOptions(explicit_schema=schema(), unexpected_field_behavior="ignore")
    for block_size in (block, len(chunk) + 1):
        try:
            return pj.read_json(pa.py_buffer(chunk), parse_options=opts,
                                read_options=pj.ReadOptions(block_size=block_size, use_threads=True))
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc) and block_size < len(chunk) + 1:
                continue  # a line longer than the block: once more with one block
            raise Unfit(str(exc)) from None


def flatten(table) -> tuple[list, list]:
    """The Arrow table of requests → (tables of spans, one per record batch, each with ``res``: the index of
    the span's resource in the second element, the resources' attribute lists). Zero-copy where Arrow allows
    it; raises Unfit for a line without resourceSpans (the ``result`` wrapper, another document) or with the
    legacy ``instrumentationLibrarySpans`` (the msgspec path reads both)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts, resources = [], []
    for rs in table.column("resourceSpans").chunks:
        if rs.null_count:
            raise Unfit("a line without resourceSpans")
        rs_flat = rs.flatten()
        if pc.sum(pc.list_value_length(rs_flat.field("instrumentationLibrarySpans"))).as_py():
            raise Unfit("legacy instrumentationLibrarySpans")
        ss = rs_flat.field("scopeSpans")
        ss_flat = ss.flatten()
        sp = ss_flat.field("spans")
        spans = sp.flatten()
        if rs_flat.null_count or ss_flat.null_count or spans.null_count:
            raise Unfit("null in place of a resourceSpans, scopeSpans or span object")
        if not len(spans):
            continue
        res = pc.add(pc.take(pc.list_parent_indices(ss), pc.list_parent_indices(sp)), len(resources))
        resources.extend(rs_flat.field("resource").field("attributes").to_pylist())
        status = spans.field("status")
        parts.append(pa.table({
            "traceId": spans.field("traceId"), "spanId": spans.field("spanId"),
            "parentSpanId": spans.field("parentSpanId"), "name": spans.field("name"), "kind": spans.field("kind"),
            "startTimeUnixNano": spans.field("startTimeUnixNano"), "endTimeUnixNano": spans.field("endTimeUnixNano"),
            "status_code": status.field("code"), "status_message": status.field("message"),
            "attributes": spans.field("attributes"), "events": spans.field("events"), "res": res,
        }))
    return parts, resources


def _one(column):
    """A column of a part as one array: the parts ``flatten`` builds hold one chunk per column, taken as it
    is (``combine_chunks`` would copy it every time)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _ids_ok(ids, width: int, nullable: bool = False) -> bool:
    """Every id is ``width`` hex digits and not all zero (null or empty allowed where ``nullable``)."""
    import pyarrow.compute as pc

    from .arrow_attrs import any_match

    if nullable:
        ids = pc.filter(ids, pc.not_equal(pc.fill_null(ids, ""), ""))
    if not len(ids):
        return True
    if ids.null_count:
        return False
    lengths = pc.min_max(pc.binary_length(ids)).as_py()
    if lengths["min"] != width or lengths["max"] != width:
        return False
    if any_match(ids, "[^0-9a-fA-F]"):
        return False
    return not pc.any(pc.equal(ids, "0" * width)).as_py()


def _checked(part):
    """The part with its times as integers (``start_ns``, ``end_ns``) when every span loads exactly as the
    msgspec path would load it: valid non-zero ids, integer times with 0 < start <= end, a name, a known kind
    and status code, and every event time an integer. None otherwise."""
    import pyarrow as pa
    import pyarrow.compute as pc

    c = lambda name: _one(part.column(name))  # noqa: E731
    if not (_ids_ok(c("traceId"), 32) and _ids_ok(c("spanId"), 16) and _ids_ok(c("parentSpanId"), 16, True)):
        return None
    if c("name").null_count:
        return None
    for col, top in (("kind", 5), ("status_code", 2)):
        lo_hi = pc.min_max(c(col)).as_py()
        if lo_hi["min"] is not None and (lo_hi["min"] < 0 or lo_hi["max"] > top):
            return None
    event_times = pc.list_flatten(c("events")).field("timeUnixNano")
    try:
        start = pc.cast(c("startTimeUnixNano"), pa.int64())
        end = pc.cast(c("endTimeUnixNano"), pa.int64())
        pc.cast(event_times, pa.int64())
    except pa.ArrowInvalid:  # not an integer or beyond int64 (a missing one stays null: checked below)
        return None
    if start.null_count or end.null_count or event_times.null_count:
        return None
    if len(start) and not pc.all(pc.and_(pc.greater(start, 0), pc.greater_equal(end, start))).as_py():
        return None
    return part.append_column("start_ns", start).append_column("end_ns", end)


def _span_table(part, trace_id, span_id, service, resource):
    """The spans of one checked part as the store's columns (promoted integers still text), or None when
    their attributes need the SQL path."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from . import arrow_attrs

    c = part.column
    got = arrow_attrs.attributes_and_promoted(_one(c("attributes")))
    if got is None:
        return None
    attributes, promoted = got
    start, end, parent, res, msg = c("start_ns"), c("end_ns"), c("parentSpanId"), c("res"), c("status_message")
    return pa.table({
        "trace_id": trace_id, "span_id": span_id,
        "parent_span_id": pc.utf8_lower(pc.if_else(pc.equal(pc.fill_null(parent, ""), ""),
                                                   pa.scalar(None, pa.string()), parent)),
        "service": _indexed(res, service), "name": c("name"), "kind": pc.fill_null(c("kind"), 0),
        "start_ns": start, "end_ns": end, "duration_ns": pc.subtract(end, start),
        "status_code": pc.fill_null(c("status_code"), 0),
        "status_message": pc.if_else(pc.equal(pc.fill_null(msg, ""), ""), pa.scalar(None, pa.string()), msg),
        **promoted, "attributes": attributes, "resource": _indexed(res, resource),
    })


def _indexed(indices, values):
    """values[indices] without copying the strings (DuckDB reads Arrow dictionaries directly)."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(_one(indices).cast(pa.int32()), values)


def _event_table(part, trace_id, span_id):
    """The events of one checked part as the store's columns, or None when their attributes need the SQL
    path."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from . import arrow_attrs

    events = _one(part.column("events"))
    flat = events.flatten()
    attrs = arrow_attrs.attributes_json(flat.field("attributes"), empty=None)
    if attrs is None:
        return None
    parent = pc.list_parent_indices(events)
    return pa.table({
        "trace_id": trace_id.take(parent), "span_id": span_id.take(parent), "name": flat.field("name"),
        "ts_ns": pc.cast(flat.field("timeUnixNano"), "int64"), "attributes": attrs,
    })


INSERT_FLAT_SPANS = f"""
INSERT INTO spans
SELECT trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns, duration_ns, status_code,
       status_message,
       {', '.join(int_text_sql(f"nullif({c}, '')", PROMOTED_SQL_TYPES[c], strict=True) if c in INT_PROMOTED else c
                  for c in PROMOTED_COLUMNS)},
       attributes, resource, ?
FROM otlp_arrow_ready
"""


def _resources(resources: list) -> dict:
    """(service, resource JSON) per resource, computed by the same code as the other readers."""
    out = {"service": [], "resource": []}
    done: dict[str, tuple[str, str]] = {}
    for attrs in resources:
        if attrs and any(kv is None or kv.get("key") is None for kv in attrs):
            raise Unfit("a resource attribute without a key")  # the exact path keeps it under "None"
        key = orjson.dumps(attrs)
        if key not in done:
            svc, rjson = resource_columns(json_attributes(_drop_nulls(attrs)))
            done[key] = (svc or "unknown", rjson)
        out["service"].append(done[key][0])
        out["resource"].append(done[key][1])
    return out


def _drop_nulls(v):
    """Arrow fills absent fields with null; the tolerant reader never saw them."""
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v


@dataclass
class Prepared:
    """A chunk turned into the store's columns by Arrow (no DuckDB yet): what ``write`` inserts."""

    source: str
    spans: int = 0
    ready: list = field(default_factory=list)     # span tables in the store's columns
    events: list = field(default_factory=list)    # event tables in the store's columns
    general: list = field(default_factory=list)   # (part, spans too?) for DuckDB's macros
    resources: dict = field(default_factory=dict)


def prepare(chunk: bytes, source: str) -> Prepared | None:
    """Parse and convert one chunk of JSON lines with Arrow only (safe in a background thread: it touches no
    DuckDB connection). None when the chunk is not fit for this path."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        parts, resources = flatten(parse(chunk))
        res = _resources(resources)
    except Unfit:
        return None
    parts = [_checked(part) for part in parts]
    if any(part is None for part in parts):
        return None
    out = Prepared(source, spans=sum(part.num_rows for part in parts), resources=res)
    service = pa.array(res["service"], pa.string())
    resource = pa.array(res["resource"], pa.string())
    for part in parts:
        trace_id = pc.utf8_lower(_one(part.column("traceId")))
        span_id = pc.utf8_lower(_one(part.column("spanId")))
        spans = _span_table(part, trace_id, span_id, service, resource)
        events = _event_table(part, trace_id, span_id) if spans is not None else None
        if spans is not None:
            out.ready.append(spans)
        if events is not None:
            out.events.append(events)
        else:  # attributes outside the common case: DuckDB renders them
            out.general.append((part, spans is None))
    return out


def write(con, prepared: Prepared) -> int:
    """Insert a prepared chunk through ``con`` (the store's writer connection); returns the spans written."""
    import pyarrow as pa

    if prepared.general:
        con.execute(MACROS)
        res = prepared.resources
        con.register("otlp_arrow_resources", pa.table({**res, "id": pa.array(range(len(res["service"])), pa.int64())}))
        try:
            for part, with_spans in prepared.general:
                _insert_sql(con, part, prepared.source, spans=with_spans)
        finally:
            con.unregister("otlp_arrow_resources")
    for name, sql, params, tables in (
            ("otlp_arrow_ready", INSERT_FLAT_SPANS, [prepared.source], prepared.ready),
            ("otlp_arrow_events", "INSERT INTO span_events SELECT * FROM otlp_arrow_events", [], prepared.events)):
        if tables:
            con.register(name, pa.concat_tables(tables))
            try:
                con.execute(sql, params)
            finally:
                con.unregister(name)
    return prepared.spans


def load_chunk(con, chunk: bytes, source: str) -> int | None:
    """Load one chunk of JSON lines into ``con``. Returns the number of spans written, or None when the
    chunk is not fit for this path (nothing was written)."""
    prepared = prepare(chunk, source)
    return None if prepared is None else write(con, prepared)


def _insert_sql(con, part, source: str, spans: bool = True) -> None:
    """The general path: DuckDB renders every AnyValue (doubles, arrays, escapes) with its macros
    (``write`` has created them and registered ``otlp_arrow_resources``)."""
    con.register("otlp_arrow_spans", part)
    try:
        if spans:
            con.execute(INSERT_SPANS, [source])
        con.execute(INSERT_EVENTS)
    finally:
        con.unregister("otlp_arrow_spans")


def load_fitting(chunks, sink: SpanSink, progress=None):
    """Load each chunk (``(chunk, first line number)``) that fits this path into the sink's store; yield the
    others, unchanged, for the exact path. The next chunks are converted in background threads while this
    one is written to DuckDB (both release the GIL), so parsing and writing overlap."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def convert(item):
        chunk, first_line = item
        if len(chunk) < MIN_CHUNK_BYTES:
            return item, None
        try:
            return item, prepare(chunk, sink.source)
        except Exception:  # anything Arrow did not expect: the exact path reads the chunk and explains it
            return item, None

    with ThreadPoolExecutor(ARROW_THREADS, thread_name_prefix="triage-arrow") as ex:
        pending: deque = deque()
        for item in chunks:
            pending.append(ex.submit(convert, item))
            if len(pending) > ARROW_THREADS:
                yield from _write_prepared(pending.popleft().result(), sink, progress)
        while pending:
            yield from _write_prepared(pending.popleft().result(), sink, progress)


def _write_prepared(result, sink: SpanSink, progress):
    item, prepared = result
    if prepared is None:
        yield item
        return
    try:
        with sink.store.transaction() as con:
            written = write(con, prepared)
    except Exception:  # nothing of the chunk stays; the exact path reads it and explains any problem
        written = None
    if written is None:
        yield item
        return
    sink.spans_written += written
    if progress:
        progress()
