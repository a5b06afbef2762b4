"""ClickHouse traces in the OpenTelemetry Collector ``clickhouseexporter`` schema (``otel_traces``).

The SQL is built once, here, and run by one of two executors with the same answer: ``ServerExecutor``
(``clickhouse-connect`` over HTTP, Arrow transfer) for a real server, ``ChdbExecutor`` (chDB: a current
ClickHouse engine in this process) for a local chDB folder, the tests and the benchmark.

Two reads of the window:
- the headline (``headline_sql``): per route, the request count, p50/p95/p99 (linear interpolation, as the
  store's ``quantile_cont``) and the error rate, aggregated by ClickHouse over every root span of the
  window: exact whatever the size. Roots, routes and errors are defined as ``analyzers.stages`` defines them
  (a span without parent, or a SERVER/CONSUMER span whose parent is not in the window; the service, the
  name and ``http.route``/``rpc.method``/``url.template``; status ERROR or an HTTP status >= 500).
- the detail (``spans_sql``): whole traces, chosen by a hash of the trace id so that a trace comes with
  all its spans, at the rate that keeps the transfer within ``--max-spans``; they load into the store like
  a file and feed stage attribution and the rules.

Schema variants (the exporter's DDL history): ``Duration`` UInt64 (now) or Int64 (before 2024);
``ScopeName``/``ScopeVersion`` columns (now) or the scope in ``SpanAttributes`` (before); ``SpanKind`` and
``StatusCode`` as ``SPAN_KIND_SERVER``/``STATUS_CODE_ERROR`` (what the exporter writes) or
``Server``/``Error`` (pdata's newer names, written by some pipelines). ``Events`` is optional.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from orjson import loads

from ..spans import PROMOTED, SpanSink, resource_columns
from .source import BackendError, Source, Window, iso, secret

# The columns triage reads; a table without one of these is not the exporter's schema.
REQUIRED = ("Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "SpanKind", "ServiceName",
            "ResourceAttributes", "SpanAttributes", "Duration", "StatusCode", "StatusMessage")
EVENTS = ("Events.Timestamp", "Events.Name", "Events.Attributes")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _lit(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _kind_expr() -> str:
    arms = ", ".join(f"SpanKind IN ('SPAN_KIND_{n}', {_lit(n.capitalize())}), {k}" for k, n in _KINDS.items())
    return f"toInt8(multiIf({arms}, 0))"


STATUS_EXPR = ("toInt8(multiIf(StatusCode IN ('STATUS_CODE_ERROR', 'Error'), 2, "
               "StatusCode IN ('STATUS_CODE_OK', 'Ok'), 1, 0))")
KIND_EXPR = _kind_expr()


def _keys(column: str) -> list[str]:
    """The attribute keys promoted to a store column, in priority order (``collectors.spans.PROMOTED``)."""
    return [k for k, _ in sorted(((k, p) for k, (c, p) in PROMOTED.items() if c == column), key=lambda kp: kp[1])]


def _route_expr() -> str:
    arms = ", ".join(f"SpanAttributes[{_lit(k)}] != '', SpanAttributes[{_lit(k)}]" for k in _keys("route"))
    return f"multiIf({arms}, '')"


def _http_status_expr() -> str:
    return "coalesce(" + ", ".join(f"toFloat64OrNull(SpanAttributes[{_lit(k)}])" for k in _keys("http_status")) + ")"


def table_name(source: Source) -> tuple[str, str]:
    """(database, table) from the URL's path and ``?table=``; BackendError on a name that is not an identifier."""
    path = source.parts.path.strip("/")
    db = path.rsplit("/", 1)[-1] if source.scheme == "chdb" else (path or "default")
    table = source.query("table", "otel_traces")
    for what, name in (("database", db), ("table", table)):
        if not _IDENT.fullmatch(name or ""):
            raise BackendError(f"{source}: {what} name {name!r} is not a plain identifier")
    return db, table


def _where(table: str, w: Window) -> str:
    return (f"FROM {table} WHERE Timestamp >= fromUnixTimestamp64Nano(toInt64({w.start_ns})) "
            f"AND Timestamp < fromUnixTimestamp64Nano(toInt64({w.end_ns}))")


SERVER = "SpanKind IN ('SPAN_KIND_SERVER', 'Server', 'SPAN_KIND_CONSUMER', 'Consumer')"
NO_PARENT = "ParentSpanId IN ('', '0000000000000000')"


def root_filter(source: Source) -> str:
    """``?service=`` / ``?name=``: the requests kept are those whose root span has this service / span name;
    pushed down to ClickHouse (``ServiceName`` and ``SpanName`` lead the exporter's sort key)."""
    out = ""
    if source.query("service"):
        out += f" AND ServiceName = {_lit(source.query('service'))}"
    if source.query("name"):
        out += f" AND SpanName = {_lit(source.query('name'))}"
    return out


def _traces_of_roots(table: str, w: Window, rf: str) -> str:
    """With a root filter: only the spans of traces that have a span able to be such a root."""
    if not rf:
        return ""
    return f" AND TraceId IN (SELECT TraceId {_where(table, w)}{rf} AND ({NO_PARENT} OR {SERVER}))"


def headline_sql(table: str, w: Window, rf: str = "") -> str:
    """Per route: requests, p50/p95/p99 of the duration (ns), error rate, over every root span of the window
    (those that ``rf``, a ``root_filter``, keeps)."""
    server, no_parent = SERVER, NO_PARENT
    return f"""
WITH
  orphan_candidates AS (SELECT cityHash64(TraceId, ParentSpanId) AS h {_where(table, w)}
                        AND {server} AND NOT {no_parent}),
  parents_present AS (SELECT cityHash64(TraceId, SpanId) AS h {_where(table, w)}
                      AND cityHash64(TraceId, SpanId) IN (SELECT h FROM orphan_candidates)),
  roots AS (
    SELECT if(ServiceName = '', 'unknown', ServiceName) AS service, SpanName AS name, {_route_expr()} AS attr_route,
           greatest(toInt64(Duration), 0) AS d,
           ({STATUS_EXPR} = 2 OR ifNull({_http_status_expr()} >= 500, false)) AS error
    {_where(table, w)}{rf}
      AND ({no_parent} OR ({server} AND cityHash64(TraceId, ParentSpanId) NOT IN (SELECT h FROM parents_present)))
  )
SELECT concat(service, ' ', if(attr_route = '' OR position(name, attr_route) > 0, name,
                               concat(name, ' ', attr_route))) AS route,
       count() AS requests, quantilesExactInclusive(0.5, 0.95, 0.99)(d) AS q, avg(error) AS error_rate
FROM roots GROUP BY route ORDER BY requests DESC, route"""


def count_sql(table: str, w: Window, rf: str = "") -> str:
    """The window's span count, which sets the sampling rate (distinct traces would cost a pass over every
    trace id: the requests, counted exactly by the headline, say the same)."""
    return f"SELECT count() AS spans {_where(table, w)}{_traces_of_roots(table, w, rf)}"


def extent_sql(table: str) -> str:
    return f"SELECT count() AS n, toUnixTimestamp64Nano(min(Timestamp)) AS t0, toUnixTimestamp64Nano(max(Timestamp)) AS t1 FROM {table}"


SAMPLE_MOD = 1 << 20


def sample_threshold(rate: float) -> int:
    """Traces whose ``cityHash64(TraceId) % 2**20`` is below this are in the sample (rate in (0, 1])."""
    return max(1, min(SAMPLE_MOD, int(rate * SAMPLE_MOD)))


def spans_sql(table: str, w: Window, threshold: int, events: bool, rf: str = "") -> str:
    """Every span of the window's sampled traces, as the store's reader needs them (kind and status as ints,
    times in ns)."""
    sample = "" if threshold >= SAMPLE_MOD else f" AND cityHash64(TraceId) % {SAMPLE_MOD} < {threshold}"
    ev = ("arrayMap(x -> toUnixTimestamp64Nano(x), `Events.Timestamp`) AS ev_ts, `Events.Name` AS ev_name, "
          "arrayMap(x -> toJSONString(x), `Events.Attributes`) AS ev_attrs" if events
          else "[] AS ev_ts, [] AS ev_name, [] AS ev_attrs")
    # maps travel as JSON text: decoding it (orjson) is ~10x faster than Arrow's map-to-Python conversion
    return (f"SELECT TraceId, SpanId, ParentSpanId, ServiceName, SpanName, {KIND_EXPR} AS kind, "
            f"toUnixTimestamp64Nano(Timestamp) AS start_ns, toInt64(Duration) AS duration_ns, {STATUS_EXPR} AS status, "
            f"StatusMessage, toJSONString(ResourceAttributes) AS ResourceAttributes, "
            f"toJSONString(SpanAttributes) AS SpanAttributes, {ev} {_where(table, w)}{sample}"
            f"{_traces_of_roots(table, w, rf)}")


def columns_sql(db: str, table: str) -> str:
    return f"SELECT name FROM system.columns WHERE database = {_lit(db)} AND table = {_lit(table)}"


def tables_sql(db: str) -> str:
    return f"SELECT name FROM system.tables WHERE database = {_lit(db)} ORDER BY name"


class ChdbExecutor:
    """Runs the SQL in chDB (a ClickHouse engine in this process), on a data folder or a given session."""

    def __init__(self, path: str | None = None, session=None):
        if session is None:
            try:
                from chdb import session as chs
            except ImportError:
                raise BackendError("chdb:// needs the chdb package (pip install 'triage[clickhouse]')") from None
            if path and not Path(path).is_dir():
                raise BackendError(f"chdb://{path}: no such chDB data folder")
            session = chs.Session(path) if path else chs.Session()
            self._own = True
        else:
            self._own = False
        self.session = session
        self.bytes_received = 0

    def arrow(self, sql: str):
        try:
            res = self.session.query(sql, "ArrowTable")
        except Exception as exc:  # chDB raises its own RuntimeError flavours with ClickHouse's message
            raise BackendError(_first_line(exc)) from None
        self.bytes_received += res.nbytes
        return res

    def close(self) -> None:
        if self._own:
            self.session.close()


class ServerExecutor:
    """Runs the SQL on a ClickHouse server through clickhouse-connect (HTTP), results as Arrow."""

    def __init__(self, source: Source, env=os.environ):
        try:
            import clickhouse_connect
            from clickhouse_connect.driver import exceptions as chx
        except ImportError:
            raise BackendError("clickhouse:// needs the clickhouse-connect package "
                               "(pip install 'triage[clickhouse]')") from None
        self._chx = chx
        logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())  # errors are said once, by us
        logging.getLogger("clickhouse_connect").propagate = False
        p = source.parts
        secure = source.scheme == "clickhouses" or source.query("secure", "0") in ("1", "true")
        user = p.username or env.get("TRIAGE_CLICKHOUSE_USER") or "default"
        password = secret(env, "TRIAGE_CLICKHOUSE_PASSWORD")
        self.where = f"{p.hostname}:{p.port or (8443 if secure else 8123)}"
        try:
            self.client = clickhouse_connect.get_client(
                host=p.hostname, port=p.port or (8443 if secure else 8123), username=user, password=password or "",
                secure=secure, verify=True, ca_cert=env.get("TRIAGE_CLICKHOUSE_CA") or None,
                connect_timeout=10, send_receive_timeout=300, autogenerate_session_id=False)
        except Exception as exc:
            raise BackendError(self._explain(exc, user)) from None
        self.user = user
        self.bytes_received = 0

    def _explain(self, exc: Exception, user: str) -> str:
        text = _first_line(exc)
        # ClickHouse's own error code, not any "516" (the text of a connection error holds the port and the
        # query id, whose digits can hold it too: an unreachable port read as a refused password)
        if "Code: 516" in text or "Authentication failed" in text or "AUTHENTICATION_FAILED" in text:
            return (f"ClickHouse at {self.where} refused user {user!r}: wrong user or password (set "
                    f"TRIAGE_CLICKHOUSE_USER / TRIAGE_CLICKHOUSE_PASSWORD or TRIAGE_CLICKHOUSE_PASSWORD_FILE)")
        full = str(exc)
        for needle, why in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                            ("Temporary failure in name resolution", "unknown host"), ("timed out", "timed out"),
                            ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted: set TRIAGE_CLICKHOUSE_CA "
                                                          "to the CA bundle that signed it")):
            if needle in full:
                return f"ClickHouse at {self.where} is unreachable: {why}"
        if isinstance(exc, self._chx.OperationalError):
            return f"ClickHouse at {self.where} is unreachable ({text[:160]})"
        return f"ClickHouse at {self.where}: {text[:300]}"

    def arrow(self, sql: str):
        try:
            res = self.client.query_arrow(sql, use_strings=True)
        except Exception as exc:
            raise BackendError(self._explain(exc, self.user)) from None
        self.bytes_received += res.nbytes
        return res

    def close(self) -> None:
        self.client.close()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def executor(source: Source):
    if source.scheme == "chdb":
        path = source.parts.path.rstrip("/").rsplit("/", 1)[0]
        return ChdbExecutor(path or None)
    return ServerExecutor(source)


def check_schema(ex, db: str, table: str, source: Source) -> bool:
    """BackendError when the table is missing or lacks a column triage reads; whether it has ``Events``."""
    names = set(ex.arrow(columns_sql(db, table)).column("name").to_pylist())
    if not names:
        tables = ex.arrow(tables_sql(db)).column("name").to_pylist()
        have = f"tables there: {', '.join(tables[:12])}" if tables else "it has no tables (or does not exist)"
        raise BackendError(f"{source}: no table {db}.{table} ({have}); name the table with ?table=NAME")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise BackendError(f"{source}: {db}.{table} is not the OpenTelemetry clickhouseexporter trace schema: "
                           f"missing column(s) {', '.join(missing)}")
    return all(c in names for c in EVENTS)


def headline(ex, table: str, w: Window, rf: str = "") -> dict[str, dict]:
    """The exact per-route figures, rounded as ``analyzers.latency.route_latency`` rounds them."""
    t = ex.arrow(headline_sql(table, w, rf))
    out = {}
    for route, n, q, err in zip(*(t.column(c).to_pylist() for c in ("route", "requests", "q", "error_rate"))):
        out[route] = {"requests": int(n), "p50_ms": round(q[0] / 1e6, 3), "p95_ms": round(q[1] / 1e6, 3),
                      "p99_ms": round(q[2] / 1e6, 3), "error_rate": round(err, 6)}
    return out


def load_spans(table_arrow, sink: SpanSink) -> int:
    """Feed the rows of ``spans_sql`` to the store's value layer; returns the spans accepted."""
    cols = {c: table_arrow.column(c).to_pylist() for c in table_arrow.column_names}
    resources: dict = {}
    n = 0
    for i, (tid, sid, pid, svc, name, kind, start, dur, status, msg, res, attrs, ev_ts, ev_name, ev_attrs) in \
            enumerate(zip(*(cols[c] for c in ("TraceId", "SpanId", "ParentSpanId", "ServiceName", "SpanName", "kind",
                                              "start_ns", "duration_ns", "status", "StatusMessage",
                                              "ResourceAttributes", "SpanAttributes", "ev_ts", "ev_name",
                                              "ev_attrs")))):
        rc = resources.get(res)
        if rc is None:
            rc = resources[res] = resource_columns(loads(res))
        events = [(en, et, loads(ea)) for et, en, ea in zip(ev_ts, ev_name, ev_attrs)] if ev_ts else None
        n += sink.add(tid, sid, pid or None, svc or rc[0], rc[1], name, kind, start, start + max(dur, 0), status,
                      msg, loads(attrs), events, lambda i=i: f"row {i}")
    sink.flush()
    return n


def ingest(store, source: Source, problems) -> dict:
    """Headline (exact) and detail (sampled whole traces) of the window into the store; returns the figures'
    provenance for the report."""
    db, name = table_name(source)
    table = f"`{db}`.`{name}`"
    w = source.window
    ex = executor(source)
    try:
        events = check_schema(ex, db, name, source)
        rf = root_filter(source)
        counts = ex.arrow(count_sql(table, w, rf)).to_pylist()[0]
        exact = headline(ex, table, w, rf) if counts["spans"] else {}
        if not exact and rf:
            raise BackendError(f"{source}: no request in {db}.{name} between {iso(w.start_ns)} and {iso(w.end_ns)} "
                               f"has a root span with" + rf.replace(" AND ", " ", 1).replace(" AND ", " and ")
                               + "; check ?service= / ?name=, or widen the window")
        if not counts["spans"]:
            ext = ex.arrow(extent_sql(table)).to_pylist()[0]
            held = (f"it holds {ext['n']:,} spans from {iso(ext['t0'])} to {iso(ext['t1'])}" if ext["n"]
                    else "it is empty")
            raise BackendError(f"{source}: no spans in {db}.{name} between {iso(w.start_ns)} and {iso(w.end_ns)} "
                               f"({held}); widen --since or set --from/--to")
        rate = min(1.0, source.max_spans / counts["spans"])
        threshold = sample_threshold(rate)
        rows = ex.arrow(spans_sql(table, w, threshold, events, rf))
        sink = SpanSink(store, str(source), problems)
        loaded = load_spans(rows, sink)
        transferred = rows.num_rows
        received = ex.bytes_received
    finally:
        ex.close()
    sampled = threshold < SAMPLE_MOD
    return {
        "source": str(source), "kind": "clickhouse", "table": f"{db}.{name}",
        "window": {"start": iso(w.start_ns), "end": iso(w.end_ns)},
        "spans_in_window": int(counts["spans"]), "requests_in_window": sum(d["requests"] for d in exact.values()),
        "latency": {"basis": "exact", "over": "every root span of the window" + (
            f" whose{rf.replace(' AND ', ' ', 1).replace(' AND ', ' and ')}" if rf else ""), "routes": exact},
        "detail": {"basis": "sampled" if sampled else "exact",
                   "rate": round(threshold / SAMPLE_MOD, 6) if sampled else 1.0,
                   "method": f"whole traces with cityHash64(TraceId) % {SAMPLE_MOD} < {threshold}" if sampled
                   else "every trace of the window",
                   "max_spans": source.max_spans, "rows_transferred": int(transferred), "spans_loaded": int(loaded),
                   "bytes_received": int(received)},
    }
