"""The exact path for OTLP JSON lines: msgspec decodes each line into typed structs, Python touches only
what needs validating (ids, times, kind, status); attributes and events stay raw JSON (``msgspec.Raw``) and
DuckDB renders them in bulk with the OTLP model's SQL macros (``otlp_model.sql_macros``). It reads every chunk
the Arrow path (``otlp_lines_arrow``) does not take.

Worker processes decode lines into ``RawSpans``; the rows are appended to the staging table
``spans_otlp_raw`` and moved into ``spans`` / ``span_events`` with one SQL statement per batch.
A line that does not fit the typed shape, and a span whose values the macros do not render (a container
inside a container), go to the tolerant reader (``otlp_document``), so problems are still reported per span.
"""
from __future__ import annotations

import msgspec
import orjson
from msgspec import Raw, Struct

from .otlp_document import add_span, parse_request, unwrap
from .otlp_model import KV_JSON, SPAN_KINDS, STATUS_CODES, has_nested_containers, json_attributes, sql_macros
from .parallel import Pool
from .spans import (INT64_MAX, INT_PROMOTED, PROMOTED_PATHS, PROMOTED_SQL_TYPES, SpanColumns, SpanSink, _as_int,
                    int_text_sql, normalize_id, promoted_sql, promoted_text_sql, resource_columns)

_EMPTY_LIST = Raw(b"[]")


class Status(Struct):
    code: int | str | None = None
    message: str | None = None


class Span(Struct):
    traceId: str | None = None
    spanId: str | None = None
    parentSpanId: str | None = None
    name: str = ""
    kind: int | str | None = 0
    startTimeUnixNano: int | str | None = None
    endTimeUnixNano: int | str | None = None
    attributes: Raw = _EMPTY_LIST
    events: Raw = _EMPTY_LIST
    status: Status | None = None


class ScopeSpans(Struct):
    spans: list[Span] = []


class ResourceSpans(Struct):
    resource: Raw = Raw(b"null")
    scopeSpans: list[ScopeSpans] | None = None
    instrumentationLibrarySpans: list[ScopeSpans] | None = None


class Request(Struct):
    resourceSpans: list[ResourceSpans]


DECODER = msgspec.json.Decoder(Request)
Error = (msgspec.ValidationError, msgspec.DecodeError)

RAW_COLUMNS = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns",
               "status_code", "status_message", "attrs", "events", "resource", "source", "lineno")

# Per connection (temporary, so nothing of it lands in a --db file), created on the first batch.
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS spans_otlp_raw (
    trace_id VARCHAR, span_id VARCHAR, parent_span_id VARCHAR, service VARCHAR, name VARCHAR, kind TINYINT,
    start_ns BIGINT, end_ns BIGINT, status_code TINYINT, status_message VARCHAR, attrs VARCHAR,
    events VARCHAR, resource VARCHAR, source VARCHAR, lineno BIGINT)
"""

PARALLEL_MIN_BYTES = 4 << 20  # a file smaller than this is read in this process (a pool costs more)
MACROS = sql_macros()

MOVE = f"""
CREATE OR REPLACE TEMP TABLE otlp_promo AS
WITH parsed AS (
    SELECT r.*, from_json(attrs, '{KV_JSON}') AS l FROM spans_otlp_raw r
),
flat AS (SELECT *, otlp_attrs_json(l) AS attributes FROM parsed),
promo AS (SELECT *, json_extract_string(attributes, {PROMOTED_PATHS}) AS p FROM flat)
SELECT trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns, status_code, status_message,
       attributes, resource, source, lineno, p
FROM promo;
INSERT INTO spans
SELECT trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns, end_ns - start_ns,
       status_code, status_message,
       {promoted_sql()},
       attributes, resource, source
FROM otlp_promo;
INSERT INTO span_events
SELECT trace_id, span_id, e.name, TRY_CAST(e.timeUnixNano AS BIGINT),
       CASE WHEN len(e.attributes) > 0 THEN otlp_attrs_json(e.attributes) END
FROM (SELECT trace_id, span_id,
             unnest(from_json(events, '[{{"name": "VARCHAR", "timeUnixNano": "VARCHAR",
                                          "attributes": [{{"key": "VARCHAR", "value": "JSON"}}]}}]')) AS e
      FROM spans_otlp_raw WHERE events <> '[]')
WHERE TRY_CAST(e.timeUnixNano AS BIGINT) IS NOT NULL;
"""

# Promoted numbers that do not fit their column (NULL there): the same problems the Python readers report.
OUT_OF_RANGE = "SELECT source, lineno, span_id, col, val, count(*) OVER (PARTITION BY source) FROM (" + \
    " UNION ALL ".join(
        f"SELECT source, lineno, span_id, '{col}' AS col, {promoted_text_sql(col)} AS val FROM otlp_promo "
        f"WHERE isfinite(TRY_CAST(val AS DOUBLE)) AND {int_text_sql('val', PROMOTED_SQL_TYPES[col])} IS NULL"
        for col in INT_PROMOTED) + ") QUALIFY row_number() OVER (PARTITION BY source ORDER BY lineno) <= 200"

COUNT_BAD_EVENTS = """
SELECT source, count(*) FROM (SELECT source, unnest(from_json(events, '[{"timeUnixNano": "VARCHAR"}]')) AS e
                              FROM spans_otlp_raw WHERE events <> '[]')
WHERE TRY_CAST(e.timeUnixNano AS BIGINT) IS NULL GROUP BY source
"""


class RawSpans(SpanColumns):
    """Validated span fields plus raw attribute/event JSON, column-wise (what workers send back)."""

    def __init__(self, source: str):
        super().__init__(source)
        self.raw: dict[str, list] = {c: [] for c in RAW_COLUMNS}

    def __len__(self) -> int:
        return len(self.raw["trace_id"]) + len(self.spans["trace_id"])


def _is_list(raw: bytes) -> bool:
    return raw[:1] == b"[" or raw.lstrip()[:1] == b"["


def decode_lines(chunk: bytes, source: str, first_lineno: int) -> RawSpans:
    """Worker entry point: a chunk of JSON lines → RawSpans (fast path) + SpanColumns (fallback lines)."""
    out = RawSpans(source)
    r = out.raw
    app = tuple(r[c].append for c in RAW_COLUMNS)
    problems = out.problems
    res_cache: dict[bytes, tuple[str | None, str]] = {}
    for offset, line in enumerate(chunk.split(b"\n")):
        if not line.strip():
            continue
        lineno = first_lineno + offset
        try:
            req = DECODER.decode(line)
        except Error:
            try:
                doc = unwrap(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                problems.add(source, f"line {lineno}", f"invalid JSON: {exc}")
                continue
            if doc is None:
                problems.add(source, f"line {lineno}", "JSON line has no resourceSpans")
                continue
            parse_request(doc, out, f"line {lineno}")
            continue
        parsed = None
        for i, rs in enumerate(req.resourceSpans):
            key = bytes(rs.resource)
            if key not in res_cache:
                res_cache[key] = _resource(key)
            service, rjson = res_cache[key]
            for j, ss in enumerate(rs.scopeSpans or rs.instrumentationLibrarySpans or ()):
                for k, sp in enumerate(ss.spans):
                    tid = normalize_id(sp.traceId, 16)
                    sid = normalize_id(sp.spanId, 8)
                    start, end = sp.startTimeUnixNano, sp.endTimeUnixNano
                    start = start if type(start) is int else _as_int(start)
                    end = end if type(end) is int else _as_int(end)
                    attrs, events = bytes(sp.attributes), bytes(sp.events)
                    kind = sp.kind
                    kind = kind if type(kind) is int else 0 if kind is None else SPAN_KINDS.get(kind, _as_int(kind))
                    st = sp.status
                    code = st.code if st is not None else 0
                    code = code if type(code) is int else 0 if code is None else STATUS_CODES.get(code, _as_int(code))
                    if tid is None or sid is None or start is None or end is None or start <= 0 or end < start \
                            or end > INT64_MAX or kind is None or not 0 <= kind <= 5 or code is None \
                            or not 0 <= code <= 2 or not _is_list(attrs) or not _is_list(events) \
                            or has_nested_containers(attrs) or has_nested_containers(events):
                        if parsed is None:  # once per line, however many of its spans need the slow path
                            parsed = orjson.loads(line)
                        _slow_span(out, parsed, i, j, k, lineno, service, rjson)  # the tolerant reader explains
                        continue
                    app[0](tid)
                    app[1](sid)
                    app[2](normalize_id(sp.parentSpanId, 8) if sp.parentSpanId else None)
                    app[3](service or "unknown")
                    app[4](sp.name)
                    app[5](kind)
                    app[6](start)
                    app[7](end)
                    app[8](code)
                    app[9](st.message or None if st is not None else None)
                    app[10](attrs.decode("utf-8", errors="replace"))
                    app[11](events.decode("utf-8", errors="replace"))
                    app[12](rjson)
                    app[13](source)
                    app[14](lineno)
    return out


def _slow_span(out: RawSpans, doc: dict, i: int, j: int, k: int, lineno: int, service, rjson) -> None:
    doc = doc.get("result", doc)
    rs = doc["resourceSpans"][i]
    scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans")
    add_span(out, scopes[j]["spans"][k], service, rjson, f"line {lineno} resourceSpans[{i}].scopeSpans[{j}].spans[{k}]")


def _resource(raw: bytes) -> tuple[str | None, str]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    return resource_columns(json_attributes(doc.get("attributes")) if isinstance(doc, dict) else {})


def _tally(per_source: dict | None, source: str, n: int) -> None:
    if per_source is not None:
        per_source[source] = per_source.get(source, 0) + n


def load_batch(con, batch: RawSpans, per_source: dict[str, int] | None = None) -> int:
    """Put one batch into the spans/span_events tables of ``con`` (caller holds the writer).
    Returns the number of spans written. The batch may hold the spans of several files (its rows carry their
    source); the problems found here are added to ``batch.problems`` under each file's name and, when
    ``per_source`` is given, counted there per file."""
    from .store import EVENT_COLUMNS, SPAN_COLUMNS, insert_frame

    n = insert_frame(con, "spans", SPAN_COLUMNS, batch.spans)
    insert_frame(con, "span_events", EVENT_COLUMNS, batch.events)
    if batch.raw["trace_id"]:
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = 'spans_otlp_raw'"
                           ).fetchone()[0]:
            con.execute(STAGING)
            con.execute(MACROS)
        insert_frame(con, "spans_otlp_raw", RAW_COLUMNS, batch.raw)
        try:
            bad_events = con.execute(COUNT_BAD_EVENTS).fetchall()
            con.execute(MOVE)
            rows = con.execute(OUT_OF_RANGE).fetchall()
        finally:
            con.execute("DELETE FROM spans_otlp_raw")
            con.execute("DROP TABLE IF EXISTS otlp_promo")
        counted: set[str] = set()
        for source, lineno, span_id, col, val, total in rows:  # sources: one batch may hold many small files
            batch.problems.add(source, f"line {lineno}",
                               f"span {span_id}: {col} value {val[:40]} out of range; not promoted")
            if source not in counted:  # listed up to 200 per file, counted exactly
                counted.add(source)
                batch.problems.count += total - min(total, 200)
                _tally(per_source, source, total)
        for source, bad in bad_events:
            batch.problems.add(source, "events", f"{bad} event(s) without a valid timeUnixNano skipped")
            _tally(per_source, source, 1)
        n += len(batch.raw["trace_id"])
    return n


def write(store, batch: RawSpans) -> int:
    """Load a batch decoded in this process straight into the store."""
    with store.writer() as con:
        return load_batch(con, batch)


_LOCAL = None


def decode_to_parquet(chunk: bytes, source: str, first_lineno: int, tmpdir: str) -> "Staged":
    """Worker entry point: decode, flatten in this worker's own DuckDB, and stage the rows as Parquet
    files, so the main process only bulk-loads columnar files (no per-row work, no pickling of rows)."""
    import os
    import uuid

    import duckdb

    from .store import SCHEMA

    global _LOCAL
    if _LOCAL is None:
        _LOCAL = duckdb.connect(config={"threads": 1})
        _LOCAL.execute(SCHEMA)
    batch = decode_lines(chunk, source, first_lineno)
    n = load_batch(_LOCAL, batch)
    stem = os.path.join(tmpdir, uuid.uuid4().hex)
    _LOCAL.execute(f"COPY spans TO '{stem}-spans.parquet' (FORMAT parquet)")
    _LOCAL.execute(f"COPY span_events TO '{stem}-events.parquet' (FORMAT parquet)")
    _LOCAL.execute("DELETE FROM spans")
    _LOCAL.execute("DELETE FROM span_events")
    return Staged(stem, n, batch.problems)


class Staged(Struct):
    stem: str
    spans: int
    problems: object


def load_staged(store, staged: "Staged") -> int:
    import os

    with store.writer() as con:
        con.execute(f"INSERT INTO spans SELECT * FROM read_parquet('{staged.stem}-spans.parquet')")
        con.execute(f"INSERT INTO span_events SELECT * FROM read_parquet('{staged.stem}-events.parquet')")
    for suffix in ("-spans.parquet", "-events.parquet"):
        try:
            os.unlink(staged.stem + suffix)
        except OSError:
            pass
    return staged.spans


def load_chunks(chunks, sink: SpanSink, pool: Pool, progress=None, parallel: bool = True) -> None:
    """Load chunks of JSON lines (``(chunk, first line number)``) into the sink's store: in worker processes
    when ``parallel`` and the pool has more than one, else in this process."""
    if not parallel or pool.workers <= 1:
        for c, n in chunks:
            batch = decode_lines(c, sink.source, n)
            sink.spans_written += write(sink.store, batch)
            sink.problems.merge(batch.problems)
            if progress:
                progress()
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="triage-ingest-") as tmp:
        for staged in pool.map(decode_to_parquet, ((c, sink.source, n, tmp) for c, n in chunks)):
            sink.spans_written += load_staged(sink.store, staged)
            sink.problems.merge(staged.problems)
            if progress:
                progress()
