"""Grafana Tempo as a source (``tempo://host:port[?service=NAME&limit=N&tls=1]``, default port 3200).

The window is searched with ``GET /api/search`` (``start``/``end`` in epoch seconds, ``limit``, a TraceQL
``q`` selecting the service when ``?service=`` is given), then each trace is fetched whole by id: ``GET
/api/v2/traces/<id>`` (a ``TraceByIDResponse``: ``{"trace": {"resourceSpans": ...}}``), falling back to the
older ``/api/traces/<id>`` (the trace itself; ``batches`` in Tempo 1.x). Both are OTLP JSON with base64 ids,
read by ``otlp_document.parse_request``. Tempo's search answers with the first traces it finds, not a count of the
window's traces: every figure is from those traces and says so (basis ``sampled``, rate unknown).
"""
from __future__ import annotations

import math

from .. import otlp_document
from ..spans import SpanSink
from .http import Http
from .source import BackendError, Source, iso

DEFAULT_LIMIT = 1000


def trace_document(body) -> dict | None:
    """The ExportTraceServiceRequest-shaped part of a trace-by-id answer (v2, v1, or Tempo 1.x ``batches``)."""
    if isinstance(body, dict) and isinstance(body.get("trace"), dict):
        body = body["trace"]
    if isinstance(body, dict) and "batches" in body and "resourceSpans" not in body:
        body = {"resourceSpans": body["batches"]}
    return body if isinstance(body, dict) and isinstance(body.get("resourceSpans"), list) else None


def ingest(store, source: Source, problems) -> dict:
    w = source.window
    limit = int(source.query("limit") or DEFAULT_LIMIT)
    service = source.query("service")
    http = Http(source, "tempo", 3200)
    span = {"start": w.start_ns // 10**9, "end": math.ceil(w.end_ns / 1e9)}
    sink = SpanSink(store, str(source), problems)
    try:
        q = '{resource.service.name="%s"}' % service.replace('"', '\\"') if service else "{}"
        found = http.get_json("/api/search", {**span, "limit": limit, "q": q, "spss": 1})
        traces = [t for t in (found.get("traces") or []) if isinstance(t, dict) and t.get("traceID")]
        if not traces:
            raise BackendError(f"{source}: Tempo found no traces between {iso(w.start_ns)} and {iso(w.end_ns)}"
                               + (f" for service {service!r}" if service else "") + "; widen --since or set --from/--to")
        fetched = 0
        for t in traces:
            tid = str(t["traceID"])
            body = http.get_json(f"/api/v2/traces/{tid}", span, missing=None)
            if body is None:  # a Tempo before /api/v2, or a trace not found there
                body = http.get_json(f"/api/traces/{tid}", span, missing=None)
            doc = trace_document(body)
            if doc is None:
                problems.add(str(source), f"trace {tid}", "not found or not a trace (answer without resourceSpans)")
                continue
            otlp_document.parse_request(doc, sink, f"trace {tid}:")
            fetched += 1
            if sink.spans_written + len(sink) >= source.max_spans:
                break
        sink.flush()
    finally:
        http.close()
    return {
        "source": str(source), "kind": "tempo", "window": {"start": iso(w.start_ns), "end": iso(w.end_ns)},
        "traces_found": len(traces),
        "detail": {"basis": "sampled", "rate": None,
                   "method": f"the traces Tempo's search returned for the window (limit {limit}), fetched whole",
                   "max_spans": source.max_spans, "traces_fetched": fetched,
                   "rows_transferred": int(sink.spans_written), "requests": http.requests,
                   "bytes_received": http.bytes_received},
    }
