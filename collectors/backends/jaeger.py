"""Jaeger as a source (``jaeger://host:port[?service=NAME&api=v3|v1&limit=N&tls=1]``, default port 16686).

``api=v3`` (the default): the api_v3 HTTP gateway, ``GET /api/v3/traces`` with ``query.service_name``,
``query.start_time_min``/``max`` (RFC 3339) and ``query.num_traces``; the answer is OTLP JSON in
``{"result": ...}`` (``otlp_json``). ``api=v1``: the classic query API of older deployments, ``GET
/api/traces`` with ``service``, ``start``/``end`` (µs) and ``limit``; the answer is Jaeger JSON
(``jaeger_json``). Jaeger searches one service at a time: without ``?service=`` every service
(``/api/v3/services`` or ``/api/services``) is searched, and a trace met again under another service is not
loaded twice. Jaeger returns the traces it finds up to the limit, not a count of the window: every figure
is from those traces and says so (basis ``sampled``, rate unknown).
"""
from __future__ import annotations

from datetime import datetime, timezone

from .. import otlp_document
from ..readers import jaeger_json
from ..spans import SpanSink, normalize_id
from .http import Http
from .source import BackendError, Source, iso

DEFAULT_LIMIT = 1000


def _rfc3339(ns: int) -> str:
    t = datetime.fromtimestamp(ns // 10**9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{t}.{ns % 10**9:09d}Z"


def _unseen_otlp(doc: dict, seen: set) -> tuple[dict, set]:
    """``doc`` without the spans of traces already loaded, and the trace ids it holds."""
    ids = set()
    out = []
    for rs in doc.get("resourceSpans") or []:
        if not isinstance(rs, dict):
            continue
        scopes = []
        for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
            if not isinstance(ss, dict):
                continue
            spans = [s for s in ss.get("spans") or [] if not isinstance(s, dict)
                     or normalize_id(s.get("traceId"), 16) not in seen]
            ids.update(normalize_id(s.get("traceId"), 16) for s in spans if isinstance(s, dict))
            scopes.append({**ss, "spans": spans})
        out.append({**rs, "scopeSpans": scopes})
    return {"resourceSpans": out}, ids


def _services(http: Http, api: str) -> list[str]:
    if api == "v3":
        return [str(s) for s in (http.get_json("/api/v3/services").get("services") or [])]
    return [str(s) for s in (http.get_json("/api/services").get("data") or [])]


def ingest(store, source: Source, problems) -> dict:
    w = source.window
    api = source.query("api", "v3")
    if api not in ("v3", "v1"):
        raise BackendError(f"{source}: api={api!r}: use api=v3 (OTLP JSON) or api=v1 (classic /api/traces)")
    limit = int(source.query("limit") or DEFAULT_LIMIT)
    http = Http(source, "jaeger", 16686)
    sink = SpanSink(store, str(source), problems)
    seen: set = set()
    try:
        services = [source.query("service")] if source.query("service") else _services(http, api)
        for svc in services:
            if api == "v3":
                body = http.get_json("/api/v3/traces", {
                    "query.service_name": svc, "query.start_time_min": _rfc3339(w.start_ns),
                    "query.start_time_max": _rfc3339(w.end_ns), "query.num_traces": limit}, missing={})
                doc = otlp_document.unwrap(body)
                if doc is None:
                    continue  # 404 "No traces found"
                doc, ids = _unseen_otlp(doc, seen)
                otlp_document.parse_request(doc, sink, f"service {svc}:")
            else:
                body = http.get_json("/api/traces", {"service": svc, "start": w.start_ns // 1000,
                                                     "end": w.end_ns // 1000, "limit": limit}, missing={})
                traces = [t for t in jaeger_json.traces_of(body) or []
                          if normalize_id(jaeger_json._pad(t.get("traceID")), 16) not in seen]
                ids = {normalize_id(jaeger_json._pad(t.get("traceID")), 16) for t in traces}
                jaeger_json.parse({"data": traces}, sink)
            seen |= ids - {None}
            if sink.spans_written + len(sink) >= source.max_spans:
                break
        sink.flush()
    finally:
        http.close()
    if not sink.spans_written:
        refused = (f"; {sink.rejected} span(s) it returned were unusable, e.g. {problems.items[-1]['message']}"
                   if sink.rejected and problems.items else "; widen --since or set --from/--to")
        raise BackendError(f"{source}: Jaeger returned no usable spans between {iso(w.start_ns)} and "
                           f"{iso(w.end_ns)}" + (f" for service {source.query('service')!r}" if source.query("service")
                                                 else f" (searched {len(services)} service(s))") + refused)
    return {
        "source": str(source), "kind": "jaeger", "api": api,
        "window": {"start": iso(w.start_ns), "end": iso(w.end_ns)},
        "detail": {"basis": "sampled", "rate": None,
                   "method": f"the traces Jaeger returned for the window, per service (limit {limit} each)",
                   "max_spans": source.max_spans, "traces_fetched": len(seen), "services": len(services),
                   "rows_transferred": int(sink.spans_written), "requests": http.requests,
                   "bytes_received": http.bytes_received},
    }
